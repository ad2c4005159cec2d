package e2e

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/pgtest"
	"github.com/auditproc/auditproc/internal/sink"
)

// postgresPipeline forwards every event to a postgres sink.
func (e *env) postgresConfig(pg *pgtest.Server, extra string) string {
	e.t.Helper()
	pw := e.dir + "/pg-password"
	require.NoError(e.t, os.WriteFile(pw, []byte(pg.Password()+"\n"), 0o600))
	return e.config(fmt.Sprintf(`%ssinks:
  archive: {type: postgres, url: %q, table: audit_events, password_file: %q, timeout: 5s}
plugins:
  - name: forward
    path: $WASM/forward.wasm
    sinks: [archive]
    config: {sink: archive}
`, extra, pg.URL("postgres"), pw))
}

func pgConn(t *testing.T, pg *pgtest.Server) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// rowCounts returns the table's rows, distinct event ids and distinct
// entry ids (a retried entry whose emit got a new event id would show as
// two event ids for one entry).
func rowCounts(c *pgx.Conn) (rows, events, entries int) {
	err := c.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT event_id), count(DISTINCT entry_id) FROM audit_events`).Scan(&rows, &events, &entries)
	if err != nil {
		return 0, 0, 0
	}
	return rows, events, entries
}

// TestPostgresSinkNoLossNoDuplicate kills a replica between the insert and
// the ack: while its INSERT is held inside PostgreSQL (a trigger sleeps),
// Redis is paused for writes (CLIENT PAUSE WRITE), so the insert commits but
// the ack cannot happen; then the replica gets SIGKILL. A second replica
// reclaims the entries and inserts them again; every event is in the table
// once, every entry acked.
func TestPostgresSinkNoLossNoDuplicate(t *testing.T) {
	e := newEnv(t)
	pg := pgtest.Start(t)
	db := pgConn(t, pg)
	ctx := context.Background()
	for _, q := range []string{
		fmt.Sprintf(sink.PostgresSchema, "audit_events"),
		`CREATE TABLE gate (hold boolean)`,
		`INSERT INTO gate VALUES (true)`,
		`CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN IF (SELECT hold FROM gate) THEN PERFORM pg_sleep(3); END IF; RETURN NULL; END $$`,
		`CREATE TRIGGER hold AFTER INSERT ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION hold()`,
	} {
		_, err := db.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	const n = 200
	ids := e.emitNumbered(stream, n, "")
	cfg := e.postgresConfig(pg, "")

	a := e.start("run", "--config", cfg, "--consumer", "replica-a")
	waitFor(t, 60*time.Second, "replica a's INSERT inside PostgreSQL", func() bool {
		var active int
		_ = db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'auditproc' AND state = 'active' AND query LIKE 'INSERT%'`).Scan(&active)
		return active > 0
	})
	require.NoError(t, e.rdb.Do(ctx, "CLIENT", "PAUSE", "60000", "WRITE").Err())
	waitFor(t, 30*time.Second, "replica a's insert to commit", func() bool {
		rows, _, _ := rowCounts(db)
		return rows > 0
	})
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	require.NoError(t, e.rdb.Do(ctx, "CLIENT", "UNPAUSE").Err())
	rowsBefore, _, _ := rowCounts(db)
	pendingBefore := e.pending(stream, group)
	t.Logf("replica a killed: %d rows committed, %d entries pending", rowsBefore, pendingBefore)
	require.Positive(t, pendingBefore, "the committed rows' entries were never acked")
	_, err := db.Exec(ctx, `UPDATE gate SET hold = false`)
	require.NoError(t, err)

	code, _, stderr := e.run(120*time.Second, "run", "--config", cfg, "--consumer", "replica-b", "--stop-when-idle")
	require.Equal(t, 0, code, tail(stderr, 30))

	rows, events, entries := rowCounts(db)
	assert.Equal(t, n, rows, "every event in the table once")
	assert.Equal(t, n, events)
	assert.Equal(t, n, entries, "one row per entry: a retried entry kept its event id")
	for _, id := range ids[:5] {
		var k int
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE event_id = $1`, id).Scan(&k))
		assert.Equal(t, 1, k, id)
	}
	assert.Zero(t, e.pending(stream, group))
	assert.Zero(t, e.xlen(dlq))
}

// TestPostgresDown runs two replicas while PostgreSQL is down for longer
// than min_idle times max_deliveries: the entries stay pending and held
// (nothing acked, nothing dead-lettered, no replica claims the other's
// entries), and once the database is back every event is written once and
// acked.
func TestPostgresDown(t *testing.T) {
	e := newEnv(t)
	pg := pgtest.Start(t)
	const n = 300
	e.emitNumbered(stream, n, "")
	require.NoError(t, pg.Kill())
	cfg := e.postgresConfig(pg, "")

	a := e.start("run", "--config", cfg, "--consumer", "replica-a")
	b := e.start("run", "--config", cfg, "--consumer", "replica-b")
	// min_idle is 1s and max_deliveries 3 (the harness's head): 6 s down
	// would dead-letter everything if held entries were stolen and charged.
	waitFor(t, 30*time.Second, "the replicas to read the entries", func() bool {
		p, err := e.rdb.XPending(context.Background(), stream, group).Result()
		return err == nil && p.Count == n
	})
	time.Sleep(6 * time.Second)
	assert.EqualValues(t, n, e.pending(stream, group), "nothing acked while the database is down")
	assert.Zero(t, e.xlen(dlq), "nothing dead-lettered while the database is down")
	// A claim would count a delivery: every entry is still on its first.
	ext, err := e.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: stream, Group: group, Start: "-", End: "+", Count: n}).Result()
	require.NoError(t, err)
	redelivered := 0
	for _, p := range ext {
		if p.RetryCount > 1 {
			redelivered++
		}
	}
	assert.Zero(t, redelivered, "no replica claimed and re-ran entries the other held while the database was down")

	require.NoError(t, pg.Start())
	db := pgConn(t, pg)
	waitFor(t, 60*time.Second, "every entry acked", func() bool { return e.pending(stream, group) == 0 })
	a.signal(syscall.SIGTERM)
	b.signal(syscall.SIGTERM)
	assert.Equal(t, 0, a.wait(30*time.Second))
	assert.Equal(t, 0, b.wait(30*time.Second))

	rows, events, entries := rowCounts(db)
	assert.Equal(t, n, rows)
	assert.Equal(t, n, events)
	assert.Equal(t, n, entries)
	assert.Zero(t, e.xlen(dlq))
	assert.NotEmpty(t, append(a.logLines("sink_write_failed"), b.logLines("sink_write_failed")...), "the outage was logged")

}
