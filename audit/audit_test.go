package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var seq atomic.Int64

// testStream names a stream of its own for each use, so that the shared
// server's streams of an earlier run (go test -count=N) never leak in.
func testStream(t testing.TB) string { return fmt.Sprintf("test:%s:%d", t.Name(), seq.Add(1)) }

func testKeys(t testing.TB) *audit.Keyring {
	t.Helper()
	key, err := audit.GenerateKey()
	require.NoError(t, err)
	keys, err := audit.NewKeyring("k1", map[string][]byte{"k1": key})
	require.NoError(t, err)
	return keys
}

func newBus(t *testing.T, cfg audit.Config) *audit.Bus {
	t.Helper()
	if cfg.Client == nil && cfg.RedisURL == "" {
		cfg.RedisURL = redistest.Shared(t).URL()
	}
	if cfg.Keys == nil {
		cfg.Keys = testKeys(t)
	}
	if cfg.Stream == "" {
		cfg.Stream = testStream(t)
	}
	bus, err := audit.New(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Close() })
	return bus
}

func TestExample(t *testing.T) {
	redisURL = redistest.Shared(t).URL()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	Example()
	os.Stdout = stdout
	require.NoError(t, w.Close())
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "group created: true\nconsumed: user.login by alice (delivery 1)\nacknowledged: 1, pending: 0\n", string(out))
}

func TestNewValidation(t *testing.T) {
	keys := testKeys(t)
	tests := map[string]audit.Config{
		"no keys":          {},
		"negative timeout": {Keys: keys, WriteTimeout: -time.Second},
		"negative maxlen":  {Keys: keys, MaxLen: -1},
		"bad url":          {Keys: keys, RedisURL: "http://user:secret@host"},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := audit.New(cfg, nil)
			require.ErrorIs(t, err, audit.ErrInvalidConfig)
			assert.NotContains(t, err.Error(), "secret")
		})
	}
	require.NoError(t, audit.Config{Keys: keys}.Validate(), "zero values are the defaults New fills in")
	bus, err := audit.New(audit.Config{Keys: keys}, nil)
	require.NoError(t, err, "defaults need no server at construction")
	require.NoError(t, bus.Close())
}

func TestLoadKeyring(t *testing.T) {
	key, err := audit.GenerateKey()
	require.NoError(t, err)
	env := map[string]string{audit.EnvKeys: fmt.Sprintf("key a hex:%x;key b hex:%x;active b", key, key)}
	keys, err := audit.LoadKeyring(func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, "b", keys.ActiveKeyID())
	assert.Equal(t, []string{"a", "b"}, keys.KeyIDs())
	assert.NotContains(t, keys.String(), fmt.Sprintf("%x", key))
	assert.NotContains(t, fmt.Sprint(keys.LogValue()), fmt.Sprintf("%x", key))

	_, err = audit.LoadKeyring(func(string) string { return "" })
	require.ErrorIs(t, err, audit.ErrInvalidKeyring)
	_, err = audit.NewKeyring("x", map[string][]byte{"x": []byte("short")})
	require.ErrorIs(t, err, audit.ErrInvalidKeyring)
}

func TestAuditEventKinds(t *testing.T) {
	type ev struct {
		Type string `json:"event_type"`
	}
	tests := []struct {
		name  string
		event any
		want  map[string]any // members the stored event must have
	}{
		{"struct", ev{Type: "a"}, map[string]any{"event_type": "a"}},
		{"pointer", &ev{Type: "p"}, map[string]any{"event_type": "p"}},
		{"map", map[string]any{"event_type": "m", "n": 1}, map[string]any{"event_type": "m", "n": 1.0}},
		{"bytes", []byte(`{"event_type":"b"}`), map[string]any{"event_type": "b"}},
		{"raw message", json.RawMessage(`{"event_type":"r"}`), map[string]any{"event_type": "r"}},
		{"json string", ` {"event_type":"s"}`, map[string]any{"event_type": "s"}},
		{"plain string", "user bob deleted", map[string]any{"message": "user bob deleted"}},
		{"own event_id kept", `{"event_id":"e-1"}`, map[string]any{"event_id": "e-1"}},
	}
	bus := newBus(t, audit.Config{})
	ctx := context.Background()
	_, err := bus.CreateGroup(ctx)
	require.NoError(t, err)
	for _, tt := range tests {
		id, err := bus.Audit(ctx, tt.event)
		require.NoError(t, err, tt.name)
		msg := next(t, bus, "c")
		assert.Equal(t, id, msg.ID, tt.name)
		var got map[string]any
		require.NoError(t, msg.Decode(&got))
		for k, v := range tt.want {
			assert.Equal(t, v, got[k], "%s: member %s", tt.name, k)
		}
		assert.Equal(t, got["event_id"], msg.EventID, tt.name)
		assert.NotEmpty(t, got["timestamp"], tt.name)
		_, err = bus.Ack(ctx, msg.ID)
		require.NoError(t, err)
	}

	for name, bad := range map[string]any{
		"nil": nil, "array bytes": []byte(`[1]`), "number": 42, "invalid bytes": []byte(`{"a":`),
		"unencodable": map[string]any{"c": make(chan int)}, "numeric event_id": `{"event_id":7}`,
	} {
		_, err := bus.Audit(ctx, bad)
		require.ErrorIs(t, err, audit.ErrInvalidEvent, name)
		assert.NotErrorIs(t, err, audit.ErrUnavailable, name)
	}
}

// next returns the next message of consumer, failing after a few seconds.
func next(t *testing.T, bus *audit.Bus, consumer string) audit.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for msg, err := range bus.Consume(ctx, consumer) {
		require.NoError(t, err)
		return msg
	}
	t.Fatal("no message")
	return audit.Message{}
}

func TestConsumeRedeliversAndClaims(t *testing.T) {
	var logs bytes.Buffer
	srv := redistest.Shared(t)
	cfg := audit.Config{
		RedisURL: srv.URL(), Keys: testKeys(t), Stream: testStream(t),
		Block: 200 * time.Millisecond, ClaimMinIdle: 50 * time.Millisecond, Count: 2,
	}
	bus, err := audit.New(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	defer bus.Close()
	ctx := context.Background()
	created, err := bus.CreateGroup(ctx)
	require.NoError(t, err)
	require.True(t, created)
	created, err = bus.CreateGroup(ctx)
	require.NoError(t, err)
	assert.False(t, created)

	var ids []string
	for i := range 3 {
		id, err := bus.Audit(ctx, map[string]int{"i": i})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	// c1 takes all three and acknowledges none.
	var got []string
	for msg, err := range bus.Consume(ctx, "c1") {
		require.NoError(t, err)
		got = append(got, msg.ID)
		if len(got) == 3 {
			break
		}
	}
	assert.Equal(t, ids, got)

	// c1 restarted: its own pending entries first, delivered again.
	msg := next(t, bus, "c1")
	assert.Equal(t, ids[0], msg.ID)
	assert.EqualValues(t, 2, msg.Deliveries)

	p, err := bus.Pending(ctx)
	require.NoError(t, err)
	assert.Equal(t, audit.PendingInfo{Count: 3, Lowest: ids[0], Highest: ids[2], Consumers: map[string]int64{"c1": 3}}, p)

	// c1 is gone for good: c2 claims its stale entries.
	time.Sleep(60 * time.Millisecond)
	claimed, err := bus.ClaimStale(ctx, "c2")
	require.NoError(t, err)
	require.Len(t, claimed, 2, "Count caps a claim")
	more, err := bus.ClaimStale(ctx, "c2")
	require.NoError(t, err)
	require.Len(t, more, 1)
	claimed = append(claimed, more...)
	var claimedIDs []string
	for _, m := range claimed {
		claimedIDs = append(claimedIDs, m.ID)
	}
	assert.Equal(t, ids, claimedIDs)
	n, err := bus.Ack(ctx, claimedIDs...)
	require.NoError(t, err)
	assert.EqualValues(t, 3, n)
	p, err = bus.Pending(ctx)
	require.NoError(t, err)
	assert.Zero(t, p.Count)
	assert.Empty(t, bus.TamperedCounts())
}

func TestConsumeSkipsTamperedAndDeleted(t *testing.T) {
	var logs bytes.Buffer
	srv := redistest.Shared(t)
	rdb := srv.Client(t)
	stream := testStream(t)
	bus, err := audit.New(audit.Config{Client: rdb, Keys: testKeys(t), Stream: stream, Block: 100 * time.Millisecond},
		slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	defer bus.Close()
	ctx := context.Background()
	_, err = bus.CreateGroup(ctx)
	require.NoError(t, err)
	raw, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"event", `{"forged":true}`}}).Result()
	require.NoError(t, err)
	first, err := bus.Audit(ctx, "first")
	require.NoError(t, err)
	second, err := bus.Audit(ctx, "second")
	require.NoError(t, err)

	assert.Equal(t, first, next(t, bus, "c").ID, "the unsigned entry is skipped")
	assert.Equal(t, map[string]uint64{"unsigned": 1}, bus.TamperedCounts())
	assert.Contains(t, logs.String(), raw)
	_, err = bus.Ack(ctx, first)
	require.NoError(t, err)

	// second is pending with c and deleted from the stream: on restart, c
	// drops it from its pending list instead of stalling on it.
	assert.Equal(t, second, next(t, bus, "c").ID)
	require.NoError(t, rdb.XDel(ctx, stream, second).Err())
	ctx2, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var redelivered []string
	for msg, err := range bus.Consume(ctx2, "c") {
		require.NoError(t, err)
		redelivered = append(redelivered, msg.ID)
	}
	assert.Empty(t, redelivered)
	assert.Contains(t, logs.String(), "audit_pending_deleted")
	p, err := bus.Pending(ctx)
	require.NoError(t, err)
	assert.Equal(t, audit.PendingInfo{Count: 1, Lowest: raw, Highest: raw, Consumers: map[string]int64{"c": 1}}, p,
		"the unsigned entry stays pending; the deleted one is gone")
}

func TestUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	const bound = 300 * time.Millisecond
	bus := newBus(t, audit.Config{RedisURL: srv.URL(), WriteTimeout: bound, RetryDelay: 50 * time.Millisecond, Block: 100 * time.Millisecond})
	ctx := context.Background()
	_, err := bus.CreateGroup(ctx)
	require.NoError(t, err)
	require.NoError(t, srv.Stop(ctx))

	calls := map[string]func() error{
		"audit":        func() error { _, err := bus.Audit(ctx, "x"); return err },
		"create group": func() error { _, err := bus.CreateGroup(ctx); return err },
		"ack":          func() error { _, err := bus.Ack(ctx, "1-0"); return err },
		"pending":      func() error { _, err := bus.Pending(ctx); return err },
		"claim stale":  func() error { _, err := bus.ClaimStale(ctx, "c"); return err },
		"consume": func() error {
			for _, err := range bus.Consume(ctx, "c") {
				return err
			}
			return nil
		},
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		require.ErrorIs(t, err, audit.ErrUnavailable, name)
		assert.Less(t, time.Since(start), bound+200*time.Millisecond, name)
	}

	// Consume retries while the loop goes on, and resumes once Redis is back.
	errs := 0
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var id string
	for msg, err := range bus.Consume(ctx2, "c") {
		if err != nil {
			errs++
			if errs == 2 {
				require.NoError(t, srv.Restart(ctx))
				id, err = bus.Audit(ctx, "back")
				require.NoError(t, err)
			}
			continue
		}
		assert.Equal(t, id, msg.ID)
		break
	}
	assert.GreaterOrEqual(t, errs, 2)
	assert.NotEmpty(t, id)
}

func TestCancelledContext(t *testing.T) {
	bus := newBus(t, audit.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := bus.Audit(ctx, "x")
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, audit.ErrUnavailable, "the caller gave up; Redis is not known to be down")
	for range bus.Consume(ctx, "c") {
		t.Fatal("a cancelled consume yields nothing")
	}
}

func TestServerRefusalIsNotUnavailable(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	stream := testStream(t)
	require.NoError(t, rdb.Set(context.Background(), stream, "not a stream", 0).Err())
	bus := newBus(t, audit.Config{Client: rdb, Stream: stream})
	_, err := bus.Audit(context.Background(), "x")
	require.Error(t, err)
	assert.NotErrorIs(t, err, audit.ErrUnavailable, "WRONGTYPE is a refusal, not an outage")
	assert.Contains(t, err.Error(), "WRONGTYPE")
}

// TestAuditSignsAChain: the package signs envelope version 2, one chain
// per Bus, ends it with a closing checkpoint in Close, and Consume never
// yields a checkpoint (it acknowledges it).
func TestAuditSignsAChain(t *testing.T) {
	srv := redistest.Start(t)
	keys := testKeys(t)
	b, err := audit.New(audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: "audit:chain", Source: "billing-api", CheckpointEvery: 2}, nil)
	require.NoError(t, err)
	ctx := context.Background()
	for i := range 3 {
		_, err := b.Audit(ctx, map[string]any{"i": i})
		require.NoError(t, err)
	}
	source := b.Source()
	assert.True(t, strings.HasPrefix(source, "billing-api/"), source)
	require.NoError(t, b.Close())

	rdb := srv.Client(t)
	msgs, err := rdb.XRange(ctx, "audit:chain", "-", "+").Result()
	require.NoError(t, err)
	var kinds []string
	for i, m := range msgs {
		assert.Equal(t, "2", m.Values["v"])
		assert.Equal(t, source, m.Values["src"])
		assert.Equal(t, fmt.Sprint(i+1), m.Values["seq"])
		kinds = append(kinds, m.Values["kind"].(string))
	}
	assert.Equal(t, []string{"event", "event", "checkpoint", "event", "checkpoint"}, kinds,
		"a checkpoint after every 2 events, and the closing one")

	_, err = audit.New(audit.Config{RedisURL: srv.URL(), Keys: keys, Source: "bad name"}, nil)
	require.ErrorIs(t, err, audit.ErrInvalidConfig)

	c, err := audit.New(audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: "audit:chain"}, nil)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateGroup(ctx)
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n := 0
	for m, err := range c.Consume(cctx, "c1") {
		require.NoError(t, err)
		assert.NotContains(t, string(m.Event), `"checkpoint"`)
		n++
		if n == 3 {
			break
		}
	}
	assert.Equal(t, 3, n)
	require.Eventually(t, func() bool {
		p, err := c.Pending(ctx)
		return err == nil && p.Count == 3
	}, 3*time.Second, 50*time.Millisecond, "checkpoints acknowledged, the 3 events pending until acked")
}
