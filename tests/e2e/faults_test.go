package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

// TestKilledReplicaWorkIsFinishedByAnother kills a replica with SIGKILL in
// the middle of the load: a second replica reclaims what it left pending, and
// every event reaches the sink at least once.
func TestKilledReplicaWorkIsFinishedByAnother(t *testing.T) {
	e := newEnv(t)
	const n = 3000
	ids := e.emitNumbered(stream, n, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	a := e.start("run", "--config", cfg, "--consumer", "replica-a", "--workers", "2")
	waitFor(t, 60*time.Second, "replica a to be mid-load", func() bool { return e.xlen(out) >= 300 })
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	leftPending := e.pending(stream, group)
	t.Logf("replica a killed after %d emits; %d entries pending", e.xlen(out), leftPending)

	code, _, _ := e.run(120*time.Second, "run", "--config", cfg, "--consumer", "replica-b", "--stop-when-idle")
	require.Equal(t, 0, code)

	counts := countByEventID(e.sinkRecords(out))
	dup := 0
	for _, id := range ids {
		require.GreaterOrEqual(t, counts[id], 1, "event %s was lost", id)
		dup += counts[id] - 1
	}
	t.Logf("%d events, every one in the sink; %d duplicates", n, dup)
	assert.Zero(t, dup, "a stream-sink emit is committed atomically with its ack: never doubled")
	assert.Zero(t, e.pending(stream, group))
	assert.Zero(t, e.xlen(dlq))
}

// TestSIGTERMDrainsInFlight stops a replica with SIGTERM under load: it
// finishes and acks what it read, leaves nothing pending, and exits 0.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	e := newEnv(t)
	const n = 5000
	e.emitNumbered(stream, n, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	p := e.start("run", "--config", cfg, "--consumer", "replica-a")
	waitFor(t, 60*time.Second, "the load to start", func() bool { return e.xlen(out) >= 200 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	assert.Zero(t, e.pending(stream, group), "everything read was finished and acked")
	processed := e.records(out)
	t.Logf("stopped after %d of %d events", processed, n)
	assert.Len(t, p.logLines("shutdown_started"), 1)

	code, _, _ := e.run(120*time.Second, "run", "--config", cfg, "--consumer", "replica-a", "--stop-when-idle")
	require.Equal(t, 0, code)
	assert.EqualValues(t, n, e.records(out), "the rest is processed by the next run, none twice")
}

// TestRedisRestartMidRun kills Redis (AOF always) under load and starts it
// again: the processor rides out the outage and finishes everything.
func TestRedisRestartMidRun(t *testing.T) {
	e := newEnv(t, redistest.WithAppendFsync("always"))
	const n = 3000
	ids := e.emitNumbered(stream, n, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	p := e.start("run", "--config", cfg, "--consumer", "replica-a")
	waitFor(t, 60*time.Second, "the load to start", func() bool { return e.xlen(out) >= 300 })
	ctx := context.Background()
	require.NoError(t, e.redis.Kill(ctx))
	time.Sleep(1500 * time.Millisecond) // the processor sees the outage
	require.NoError(t, e.redis.Restart(ctx))
	e.rdb = e.redis.Client(t)

	waitFor(t, 90*time.Second, "every event to be processed after the restart", func() bool {
		n, err := e.rdb.XLen(ctx, out).Result()
		return err == nil && n >= int64(len(ids))
	})
	waitFor(t, 30*time.Second, "nothing pending", func() bool { return e.pending(stream, group) == 0 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	counts := countByEventID(e.sinkRecords(out))
	dup := 0
	for _, id := range ids {
		require.GreaterOrEqual(t, counts[id], 1, "event %s was lost", id)
		dup += counts[id] - 1
	}
	t.Logf("%d events after a Redis restart: none lost, %d duplicates", n, dup)
	assert.NotEmpty(t, p.logLines("redis_operation_failed"), "the outage was logged")
	assert.NotEmpty(t, p.logLines("redis_recovered"), "the recovery was logged")
}

// TestEmitAndAckAreAtomic makes the sink append fail (the sink key holds a
// string): the entry is not acked and nothing is emitted; once the key is
// fixed, the entry is emitted exactly once and acked.
func TestEmitAndAckAreAtomic(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.rdb.Set(ctx, out, "not a stream", 0).Err())
	ids := e.emitNumbered(stream, 10, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	p := e.start("run", "--config", cfg)
	waitFor(t, 30*time.Second, "commits to fail", func() bool { return len(p.logLines("redis_operation_failed")) > 0 })
	assert.EqualValues(t, 10, e.pending(stream, group), "a failed emit leaves its entry pending, not acked")

	require.NoError(t, e.rdb.Del(ctx, out).Err())
	waitFor(t, 30*time.Second, "the commit to go through", func() bool { return e.pending(stream, group) == 0 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	counts := countByEventID(e.sinkRecords(out))
	for _, id := range ids {
		assert.Equal(t, 1, counts[id], fmt.Sprintf("event %s emitted exactly once", id))
	}
}
