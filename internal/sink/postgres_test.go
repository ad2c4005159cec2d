package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/pgtest"
	"github.com/auditproc/auditproc/internal/sink"
)

func items(n int, prefix string) []sink.Item {
	out := make([]sink.Item, n)
	for i := range out {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		out[i] = sink.Item{
			EventID: id, EntryID: fmt.Sprintf("1700000000000-%d", i), Stream: "audit:stream", KeyID: "k1",
			Event: []byte(fmt.Sprintf(`{"event_id":%q,"timestamp":"2026-12-04T03:00:00.000007Z","actor":"alice","action":"login","n":%d}`, id, i)),
		}
	}
	return out
}

func newPostgres(t *testing.T, s *pgtest.Server, table string) *sink.Postgres {
	t.Helper()
	p, err := sink.NewPostgres("archive", sink.PostgresConfig{URL: s.URL("postgres"), Password: s.Password(), Table: table}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestPostgresSinkWrite(t *testing.T) {
	s := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, s.DSN())
	require.NoError(t, err)
	defer db.Close(ctx)
	_, err = db.Exec(ctx, "CREATE SCHEMA trail")
	require.NoError(t, err)

	p := newPostgres(t, s, "trail.events")
	batch := items(300, "ev")
	require.NoError(t, p.Write(ctx, batch))
	// A retried batch, overlapping the first: no row twice.
	require.NoError(t, p.Write(ctx, append(items(310, "ev")[250:], batch[0])))

	var n, distinct int
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*), count(DISTINCT event_id) FROM trail.events").Scan(&n, &distinct))
	assert.Equal(t, 310, n)
	assert.Equal(t, 310, distinct)

	var entry, stream, key, actor, action string
	var ts time.Time
	var num int
	require.NoError(t, db.QueryRow(ctx, `SELECT entry_id, stream, key_id, "timestamp", actor, action, (event->>'n')::int FROM trail.events WHERE event_id = 'ev-0007'`).
		Scan(&entry, &stream, &key, &ts, &actor, &action, &num))
	assert.Equal(t, "1700000000000-7", entry)
	assert.Equal(t, "audit:stream", stream)
	assert.Equal(t, "k1", key)
	assert.Equal(t, time.Date(2026, 12, 4, 3, 0, 0, 7000, time.UTC), ts.UTC(), "microsecond precision")
	assert.Equal(t, "alice", actor)
	assert.Equal(t, "login", action)
	assert.Equal(t, 7, num)

	var ssl bool
	require.NoError(t, db.QueryRow(ctx, `SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'auditproc'`).Scan(&ssl))
	assert.True(t, ssl, "the sink's connections use TLS")
}

func TestPostgresSinkRefusedRow(t *testing.T) {
	s := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := newPostgres(t, s, "")
	batch := items(3, "bad")
	batch[1].Event = []byte(`{"event_id":"bad-0001","timestamp":"2026-12-04T03:00:00Z","note":"nul \u0000 here"}`)
	err := p.Write(ctx, batch)
	errs := sink.ItemErrors(err, 3)
	assert.NoError(t, errs[0])
	assert.True(t, sink.IsPermanent(errs[1]), "a row jsonb cannot hold is refused for good: %v", errs[1])
	assert.NoError(t, errs[2])

	db, err := pgx.Connect(ctx, s.DSN())
	require.NoError(t, err)
	defer db.Close(ctx)
	var n int
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*) FROM audit_events").Scan(&n))
	assert.Equal(t, 2, n)
}

func TestPostgresSinkServerDown(t *testing.T) {
	s := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newPostgres(t, s, "")
	require.NoError(t, p.Write(ctx, items(5, "a")))
	require.NoError(t, s.Kill())
	err := p.Write(ctx, items(5, "b"))
	require.Error(t, err)
	assert.False(t, sink.IsPermanent(err), "a server that is down is retried: %v", err)
	require.NoError(t, s.Start())
	require.NoError(t, p.Write(ctx, items(5, "b")))

	db, err := pgx.Connect(ctx, s.DSN())
	require.NoError(t, err)
	defer db.Close(ctx)
	var n int
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*) FROM audit_events").Scan(&n))
	assert.Equal(t, 10, n)
}

func TestPostgresSinkWrongPassword(t *testing.T) {
	s := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secret := "not-the-password-" + s.Password()[:4]
	p, err := sink.NewPostgres("archive", sink.PostgresConfig{URL: s.URL("postgres"), Password: secret}, nil)
	require.NoError(t, err)
	defer p.Close()
	err = p.Write(ctx, items(1, "x"))
	require.Error(t, err)
	assert.False(t, sink.IsPermanent(err))
	assert.NotContains(t, err.Error(), secret)
}

func TestPostgresConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sink.PostgresConfig
		want string
	}{
		{"no url", sink.PostgresConfig{}, "url is required"},
		{"password in url", sink.PostgresConfig{URL: "postgres://u:hunter2@127.0.0.1:1/db"}, "holds a password"},
		{"bad table", sink.PostgresConfig{URL: "postgres://u@127.0.0.1:1/db", Table: `x"; DROP TABLE y`}, "not an identifier"},
		{"three parts", sink.PostgresConfig{URL: "postgres://u@127.0.0.1:1/db", Table: "a.b.c"}, "not an identifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
	require.NoError(t, sink.PostgresConfig{URL: "postgres://u@127.0.0.1:1/db", Table: "trail.events"}.Validate())
}
