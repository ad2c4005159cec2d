package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// Environment of the consumer subprocess (TestHelperCrashingConsumer).
const (
	envHelper   = "AUDITPROC_IT_HELPER"
	envRedisURL = "AUDITPROC_IT_REDIS_URL"
	envStream   = "AUDITPROC_IT_STREAM"
	envTake     = "AUDITPROC_IT_TAKE"
)

// keyEnv returns a fresh keyring as the environment LoadKeyring reads.
func keyEnv(t *testing.T) map[string]string {
	t.Helper()
	key, err := audit.GenerateKey()
	require.NoError(t, err)
	return map[string]string{audit.EnvKeys: fmt.Sprintf("key it-1 hex:%x", key)}
}

func newBus(t *testing.T, url, stream string, env map[string]string, logger *slog.Logger, cfg audit.Config) *audit.Bus {
	t.Helper()
	keys, err := audit.LoadKeyring(func(k string) string { return env[k] })
	require.NoError(t, err)
	cfg.RedisURL, cfg.Keys, cfg.Stream = url, keys, stream
	bus, err := audit.New(cfg, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Close() })
	return bus
}

func streamName(t *testing.T) string {
	return fmt.Sprintf("it:%s:%d", t.Name(), time.Now().UnixNano())
}

// TestHelperCrashingConsumer is not a test: run as a subprocess by
// TestAuditStreamNoMessageLoss, it consumes AUDITPROC_IT_TAKE messages as
// "worker-1" without acknowledging them, reports each on stdout, and waits to
// be killed.
func TestHelperCrashingConsumer(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("subprocess of TestAuditStreamNoMessageLoss")
	}
	keys, err := audit.LoadKeyring(os.Getenv)
	require.NoError(t, err)
	bus, err := audit.New(audit.Config{RedisURL: os.Getenv(envRedisURL), Keys: keys, Stream: os.Getenv(envStream), Count: 10}, nil)
	require.NoError(t, err)
	var take int
	_, err = fmt.Sscan(os.Getenv(envTake), &take)
	require.NoError(t, err)
	n := 0
	for msg, err := range bus.Consume(context.Background(), "worker-1") {
		require.NoError(t, err)
		fmt.Printf("consumed %s\n", msg.ID)
		if n++; n == take {
			break
		}
	}
	fmt.Println("done")
	select {} // processing forever, until SIGKILL
}

func TestAuditStreamNoMessageLoss(t *testing.T) {
	srv := redistest.Shared(t)
	stream, env := streamName(t), keyEnv(t)
	bus := newBus(t, srv.URL(), stream, env, nil, audit.Config{ClaimMinIdle: 200 * time.Millisecond, Count: 100, Block: 300 * time.Millisecond})
	ctx := context.Background()
	_, err := bus.CreateGroup(ctx)
	require.NoError(t, err)
	written := map[string]bool{}
	for i := range 100 {
		id, err := bus.Audit(ctx, map[string]any{"event_type": "record.read", "seq": i})
		require.NoError(t, err)
		written[id] = true
	}

	// The consumer process takes 50 and is SIGKILLed before acknowledging.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashingConsumer$", "-test.v")
	cmd.Env = append(os.Environ(), envHelper+"=1", envRedisURL+"="+srv.URL(), envStream+"="+stream, envTake+"=50",
		audit.EnvKeys+"="+env[audit.EnvKeys])
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	crashed := map[string]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "consumed "); ok {
			crashed[id] = true
		}
		if sc.Text() == "done" {
			break
		}
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.Len(t, crashed, 50, "the consumer took 50 before it was killed")
	p, err := bus.Pending(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"worker-1": 50}, p.Consumers, "its 50 stay pending")

	// A new consumer claims the crashed one's 50 once stale, then reads the rest.
	time.Sleep(250 * time.Millisecond)
	claimed, err := bus.ClaimStale(ctx, "worker-2")
	require.NoError(t, err)
	got := map[string]int{}
	for _, m := range claimed {
		assert.True(t, crashed[m.ID], "claimed %s was one of the crashed consumer's", m.ID)
		assert.EqualValues(t, 2, m.Deliveries)
		got[m.ID]++
	}
	require.Equal(t, 50, len(claimed))
	n, err := bus.Ack(ctx, ids(claimed)...)
	require.NoError(t, err)
	assert.EqualValues(t, 50, n, "the claimed 50 are processed and acknowledged")

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for msg, err := range bus.Consume(cctx, "worker-2") {
		require.NoError(t, err)
		got[msg.ID]++
		if len(got) == 100 {
			break
		}
	}
	require.Equal(t, 100, len(got), "every written event arrived")
	var rest []string
	for id, n := range got {
		assert.True(t, written[id])
		assert.Equal(t, 1, n, "%s arrived once after the restart", id)
		if !crashed[id] {
			rest = append(rest, id)
		}
	}
	n, err = bus.Ack(ctx, rest...)
	require.NoError(t, err)
	assert.EqualValues(t, 50, n)
	p, err = bus.Pending(ctx)
	require.NoError(t, err)
	assert.Zero(t, p.Count)
}

func TestAuditStreamConsumerGroupSemantics(t *testing.T) {
	srv := redistest.Shared(t)
	stream, env := streamName(t), keyEnv(t)
	bus := newBus(t, srv.URL(), stream, env, nil, audit.Config{Count: 1, Block: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	created, err := bus.CreateGroup(ctx)
	require.NoError(t, err)
	require.True(t, created)

	var mu sync.Mutex
	seen := map[string][]string{} // entry id → consumers that received it
	var wg sync.WaitGroup
	ready := make(chan struct{}, 2)
	for _, name := range []string{"consumer-a", "consumer-b"} {
		wg.Go(func() {
			ready <- struct{}{}
			for msg, err := range bus.Consume(ctx, name) {
				if !assert.NoError(t, err) {
					return
				}
				n, err := bus.Ack(ctx, msg.ID)
				assert.NoError(t, err)
				assert.EqualValues(t, 1, n, "acknowledged exactly once")
				time.Sleep(20 * time.Millisecond) // processing
				mu.Lock()
				seen[msg.ID] = append(seen[msg.ID], name)
				done := len(seen) == 10
				mu.Unlock()
				if done {
					cancel()
				}
			}
		})
	}
	<-ready
	<-ready
	time.Sleep(100 * time.Millisecond) // both are reading
	for i := range 10 {
		_, err := bus.Audit(context.Background(), map[string]int{"seq": i})
		require.NoError(t, err)
	}
	wg.Wait()

	require.Len(t, seen, 10, "every event was processed")
	per := map[string]int{}
	for id, who := range seen {
		assert.Len(t, who, 1, "%s was delivered to one consumer only", id)
		per[who[0]]++
	}
	assert.Positive(t, per["consumer-a"], "the group spreads the events: %v", per)
	assert.Positive(t, per["consumer-b"], "the group spreads the events: %v", per)
	p, err := bus.Pending(context.Background())
	require.NoError(t, err)
	assert.Zero(t, p.Count)
}

func TestAuditStreamHMACRejectsTampered(t *testing.T) {
	srv := redistest.Shared(t)
	stream, env := streamName(t), keyEnv(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	bus := newBus(t, srv.URL(), stream, env, logger, audit.Config{Block: 200 * time.Millisecond})
	ctx := context.Background()
	_, err := bus.CreateGroup(ctx)
	require.NoError(t, err)

	signed, err := bus.Audit(ctx, map[string]string{"event_type": "user.login", "actor": "alice"})
	require.NoError(t, err)
	host, port, _ := strings.Cut(srv.Addr(), ":")
	raw, err := exec.Command("redis-cli", "-h", host, "-p", port, "XADD", stream, "*",
		"event", `{"event_id":"forged","event_type":"user.promote","actor":"mallory"}`).Output()
	require.NoError(t, err, "redis-cli XADD")
	rawID := strings.TrimSpace(string(raw))
	require.NotEmpty(t, rawID)
	after, err := bus.Audit(ctx, map[string]string{"event_type": "user.logout", "actor": "alice"})
	require.NoError(t, err)

	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var got []string
	for msg, err := range bus.Consume(cctx, "c") {
		if dl, _ := cctx.Deadline(); err != nil && time.Until(dl) < 250*time.Millisecond {
			break // the window ended during a read (the socket deadline is the window's)
		}
		require.NoError(t, err)
		got = append(got, msg.ID)
		_, err = bus.Ack(ctx, msg.ID)
		require.NoError(t, err)
	}
	assert.Equal(t, []string{signed, after}, got, "only signed events are delivered")

	logMu.Lock()
	lines := bytes.Split(bytes.TrimSpace(logs.Bytes()), []byte("\n"))
	logMu.Unlock()
	var security []map[string]any
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal(l, &m))
		if m["msg"] == "security_audit_tampered_message" {
			security = append(security, m)
		}
	}
	require.NotEmpty(t, security, "the security event is logged")
	assert.Equal(t, rawID, security[0]["entry_id"])
	assert.Equal(t, stream, security[0]["stream"])
	assert.Equal(t, "unsigned", security[0]["reason"])
	assert.Equal(t, map[string]uint64{"unsigned": uint64(len(security))}, bus.TamperedCounts())

	p, err := bus.Pending(ctx)
	require.NoError(t, err)
	assert.Equal(t, audit.PendingInfo{Count: 1, Lowest: rawID, Highest: rawID, Consumers: map[string]int64{"c": 1}}, p,
		"the raw entry stays pending, unacknowledged")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestAuditStreamDegradedMode(t *testing.T) {
	srv := redistest.Start(t)
	stream, env := streamName(t), keyEnv(t)
	const bound = 500 * time.Millisecond
	bus := newBus(t, srv.URL(), stream, env, nil, audit.Config{WriteTimeout: bound, Block: 200 * time.Millisecond, RetryDelay: 50 * time.Millisecond})
	ctx := context.Background()
	_, err := bus.CreateGroup(ctx)
	require.NoError(t, err)

	before, err := bus.Audit(ctx, map[string]string{"event_type": "before"})
	require.NoError(t, err)
	first := consumeOne(t, bus)
	assert.Equal(t, before, first)
	n, err := bus.Ack(ctx, first)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	require.NoError(t, srv.Stop(ctx))
	for range 3 {
		start := time.Now()
		_, err = bus.Audit(ctx, map[string]string{"event_type": "during"})
		took := time.Since(start)
		require.ErrorIs(t, err, audit.ErrUnavailable)
		assert.Less(t, took, bound+250*time.Millisecond, "fails fast, within the configured bound")
	}

	require.NoError(t, srv.Restart(ctx))
	afterID, err := bus.Audit(ctx, map[string]string{"event_type": "after"})
	require.NoError(t, err, "writing resumes without a restart of the producer")
	assert.Equal(t, afterID, consumeOne(t, bus), "consuming resumes")

	// Nothing acknowledged is lost: the first event is still in the stream
	// and not pending; the failed writes were reported, not stored.
	stored, err := srv.Client(t).XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, stored, 2)
	assert.Equal(t, []string{before, afterID}, []string{stored[0].ID, stored[1].ID})
	p, err := bus.Pending(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"c": 1}, p.Consumers)
	assert.Equal(t, afterID, p.Lowest)
}

func ids(msgs []audit.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func consumeOne(t *testing.T, bus *audit.Bus) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for msg, err := range bus.Consume(ctx, "c") {
		if err != nil {
			continue // Redis coming back: Consume retries
		}
		return msg.ID
	}
	t.Fatal("nothing consumed")
	return ""
}
