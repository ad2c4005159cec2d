package streambus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the decoded log lines whose msg is msg.
func (l *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(line, &m), "log line %s", line)
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type fixture struct {
	rdb    *redis.Client
	keys   *integrity.Keyring
	bus    *streambus.Bus
	logs   *logBuffer
	stream string
	group  string
}

var streamSeq atomic.Int64

// uniqueName returns a key name unique in the shared server.
func uniqueName(t testing.TB, what string) string {
	return fmt.Sprintf("test:%s:%s:%d:%d", strings.ReplaceAll(t.Name(), "/", "."), what, time.Now().UnixNano(), streamSeq.Add(1))
}

func newKeyring(t testing.TB, active string, ids ...string) *integrity.Keyring {
	t.Helper()
	keys := map[string][]byte{}
	for _, id := range append(ids, active) {
		k, err := integrity.GenerateKey()
		require.NoError(t, err)
		keys[id] = k
	}
	kr, err := integrity.NewKeyring(active, keys)
	require.NoError(t, err)
	return kr
}

// newFixture returns a Bus on the shared server with debug logs captured.
func newFixture(t *testing.T, cfg streambus.Config) *fixture {
	t.Helper()
	return newFixtureOn(t, redistest.Shared(t).Client(t), cfg)
}

func newFixtureOn(t *testing.T, rdb *redis.Client, cfg streambus.Config) *fixture {
	t.Helper()
	f := &fixture{rdb: rdb, keys: newKeyring(t, "k1"), logs: &logBuffer{},
		stream: uniqueName(t, "stream"), group: "g"}
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bus, err := streambus.New(cfg, logger, rdb, f.keys)
	require.NoError(t, err)
	f.bus = bus
	return f
}

// event returns a realistic audit event of about 240 bytes; stamping adds
// its event_id and timestamp (about 90 more).
func event(i int) []byte {
	return fmt.Appendf(nil, `{"event_type":"user.login","actor":{"id":"user-%06d","ip":"203.0.113.7","agent":"Mozilla/5.0 (X11; Linux x86_64)"},"target":{"type":"session","id":"sess-%06d"},"outcome":"success","details":{"method":"password","mfa":true,"region":"eu-west-1"}}`, i, i)
}

// add appends n signed events and returns their entries.
func (f *fixture) add(t *testing.T, n int) []streambus.Entry {
	t.Helper()
	out := make([]streambus.Entry, n)
	for i := range n {
		e, err := f.bus.XAdd(context.Background(), f.stream, event(i), 0)
		require.NoError(t, err)
		out[i] = e
	}
	return out
}

// rawAdd appends an entry with XADD, bypassing signing.
func (f *fixture) rawAdd(t *testing.T, stream string, values ...any) string {
	t.Helper()
	id, err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: values}).Result()
	require.NoError(t, err)
	return id
}

// tamper appends a copy of entry e with its event changed but its signature
// kept, and returns its id.
func (f *fixture) tamper(t *testing.T, e streambus.Entry) string {
	t.Helper()
	changed := bytes.Replace(e.Event, []byte(`"success"`), []byte(`"failure"`), 1)
	require.NotEqual(t, e.Event, changed)
	return f.rawAdd(t, f.stream, "v", "1", "kid", e.KeyID, "event", changed, "sig", e.Sig)
}

func (f *fixture) createGroup(t *testing.T, start string) {
	t.Helper()
	created, err := f.bus.XGroupCreate(context.Background(), f.stream, f.group, start)
	require.NoError(t, err)
	require.True(t, created)
}

// readAll reads every entry of stream through bus, verified, with a
// consumer group of its own.
func readAll(t *testing.T, bus *streambus.Bus, stream string) streambus.Batch {
	t.Helper()
	ctx := context.Background()
	group := uniqueName(t, "reader")
	_, err := bus.XGroupCreate(ctx, stream, group, "0")
	require.NoError(t, err)
	b, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "reader", Count: 10_000, Block: -1})
	require.NoError(t, err)
	return b
}

// pendingIDs lists the ids pending in the fixture's group, in order.
func (f *fixture) pendingIDs(t *testing.T) []string {
	t.Helper()
	ps, err := f.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: f.stream, Group: f.group, Start: "-", End: "+", Count: 10_000}).Result()
	require.NoError(t, err)
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

func ids(es []streambus.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// stoppedClient returns a client of a server that has been stopped.
func stoppedClient(t *testing.T) *redis.Client {
	t.Helper()
	srv := redistest.Start(t)
	opts := srv.Options()
	opts.MaxRetries = -1 // fail at once instead of retrying with backoff
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, srv.Stop(context.Background()))
	return rdb
}

// limitedClient returns a client of the shared server logged in as a user
// that may run every command except those listed (ACL), to reach the
// branches where one command of a sequence fails.
func limitedClient(t *testing.T, denied ...string) *redis.Client {
	t.Helper()
	srv := redistest.Shared(t)
	admin := srv.Client(t)
	user := uniqueName(t, "user")
	pass := fmt.Sprintf("p%d", time.Now().UnixNano())
	rule := []any{"ACL", "SETUSER", user, "reset", "on", ">" + pass, "~*", "&*", "+@all"}
	for _, d := range denied {
		rule = append(rule, "-"+d)
	}
	require.NoError(t, admin.Do(context.Background(), rule...).Err())
	t.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	opts := srv.Options()
	opts.Username, opts.Password = user, pass
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestNew(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	keys := newKeyring(t, "k1")
	tests := []struct {
		name string
		cfg  streambus.Config
		rdb  redis.UniversalClient
		keys *integrity.Keyring
		ok   bool
	}{
		{"defaults", streambus.Config{}, rdb, keys, true},
		{"negative block", streambus.Config{Block: -time.Second}, rdb, keys, false},
		{"negative count", streambus.Config{Count: -1}, rdb, keys, false},
		{"nil client", streambus.Config{}, nil, keys, false},
		{"nil keyring", streambus.Config{}, rdb, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus, err := streambus.New(tt.cfg, nil, tt.rdb, tt.keys)
			if tt.ok {
				require.NoError(t, err)
				assert.NotNil(t, bus)
				assert.Empty(t, bus.TamperedCounts())
				return
			}
			require.ErrorIs(t, err, streambus.ErrInvalidArgs)
		})
	}
}

func TestInvalidArgs(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	calls := map[string]func() error{
		"xadd no stream":       func() error { _, err := f.bus.XAdd(ctx, "", event(1), 0); return err },
		"xadd negative maxlen": func() error { _, err := f.bus.XAdd(ctx, f.stream, event(1), -1); return err },
		"xreadgroup no consumer": func() error {
			_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group})
			return err
		},
		"xgroupcreate no group": func() error { _, err := f.bus.XGroupCreate(ctx, f.stream, "", "0"); return err },
		"xack no group":         func() error { _, err := f.bus.XAck(ctx, f.stream, "", "1-0"); return err },
		"xpending no group":     func() error { _, err := f.bus.XPending(ctx, f.stream, ""); return err },
		"xinfo group no group":  func() error { _, err := f.bus.XInfoGroup(ctx, f.stream, ""); return err },
		"xautoclaim no consumer": func() error {
			_, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group})
			return err
		},
		"deadletter no dlq": func() error {
			_, err := f.bus.DeadLetter(ctx, f.stream, f.group, "", streambus.Letter{ID: "1-0"})
			return err
		},
		"commit no group": func() error { _, err := f.bus.Commit(ctx, f.stream, "", streambus.Item{ID: "1-0"}); return err },
		"commit item without id": func() error {
			_, err := f.bus.Commit(ctx, f.stream, f.group, streambus.Item{})
			return err
		},
		"commit add without stream": func() error {
			_, err := f.bus.Commit(ctx, f.stream, f.group, streambus.Item{ID: "1-0", Adds: []streambus.Add{{Event: event(1)}}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			require.ErrorIs(t, call(), streambus.ErrInvalidArgs)
		})
	}
	n, err := f.rdb.Exists(ctx, f.stream).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no call with invalid arguments reached Redis")
}

// TestRedisDown reaches the error branch of every operation with a server
// that has been stopped.
func TestRedisDown(t *testing.T) {
	f := newFixtureOn(t, stoppedClient(t), streambus.Config{})
	ctx := context.Background()
	calls := map[string]func() error{
		"xadd":         func() error { _, err := f.bus.XAdd(ctx, f.stream, event(1), 0); return err },
		"xgroupcreate": func() error { _, err := f.bus.XGroupCreate(ctx, f.stream, f.group, "0"); return err },
		"xreadgroup": func() error {
			_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
			return err
		},
		"xreadgroup with ack": func() error {
			_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Ack: []string{"1-0"}})
			return err
		},
		"xack":        func() error { _, err := f.bus.XAck(ctx, f.stream, f.group, "1-0"); return err },
		"xpending":    func() error { _, err := f.bus.XPending(ctx, f.stream, f.group); return err },
		"xinfo group": func() error { _, err := f.bus.XInfoGroup(ctx, f.stream, f.group); return err },
		"xautoclaim": func() error {
			_, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
			return err
		},
		"deadletter": func() error {
			_, err := f.bus.DeadLetter(ctx, f.stream, f.group, f.stream+":dlq", streambus.Letter{ID: "1-0"})
			return err
		},
		"commit": func() error { _, err := f.bus.Commit(ctx, f.stream, f.group, streambus.Item{ID: "1-0"}); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			require.Error(t, err)
			assert.NotErrorIs(t, err, streambus.ErrInvalidArgs)
			assert.Contains(t, err.Error(), f.stream, "the error names the stream")
		})
	}
}

// prefill appends n signed events in pipelined batches.
func prefill(tb testing.TB, rdb *redis.Client, keys *integrity.Keyring, stream string, n int) {
	tb.Helper()
	ctx := context.Background()
	now := time.Now()
	for done := 0; done < n; {
		pipe := rdb.Pipeline()
		for ; done < n; done++ {
			ev, _, err := integrity.Stamp(event(done), now)
			require.NoError(tb, err)
			env, err := keys.Sign(stream, ev)
			require.NoError(tb, err)
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()})
			if pipe.Len() == 1000 {
				done++
				break
			}
		}
		_, err := pipe.Exec(ctx)
		require.NoError(tb, err)
	}
}
