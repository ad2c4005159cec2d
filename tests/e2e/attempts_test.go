package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

// slowPipeline is the e2e plugin, trusted (no deadline), with conf.
func slowPipeline(conf string) string {
	return `sinks:
  out: {type: stream, stream: audit:out}
plugins:
  - name: e2e
    path: $WASM/e2e-go.wasm
    trusted: true
    sinks: [out]
    config: ` + conf + "\n"
}

// maxDeliveries of the pending entries of the group.
func (e *env) maxDeliveries() int64 {
	e.t.Helper()
	ps, err := e.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: stream, Group: group, Start: "-", End: "+", Count: 1000}).Result()
	require.NoError(e.t, err)
	var top int64
	for _, p := range ps {
		top = max(top, p.RetryCount)
	}
	return top
}

// TestHeldEntriesNotClaimed is issue 9's scenario: 40 entries of about
// 150 ms each, one worker, min_idle 1 s. The entries wait in the replica's
// queue for seconds, far past min_idle; the reclaimer must not claim them
// (their delivery counts stay at 1), and after a SIGKILL and a restart no
// good entry is dead-lettered.
func TestHeldEntriesNotClaimed(t *testing.T) {
	e := newEnv(t)
	const n = 40
	ids := e.emitNumbered(stream, n, "")
	cfg := e.configWith("consumer: {block: 200ms, batch_size: 64, workers: 1, shutdown_timeout: 10s}\n"+
		"reclaim: {interval: 100ms, min_idle: 1s, max_deliveries: 3}\n",
		slowPipeline(`{"sink": "out", "spin": 12000000}`))

	a := e.start("run", "--config", cfg, "--consumer", "replica-a")
	waitFor(t, 2*time.Minute, "entries to wait in the queue past min_idle", func() bool { return e.xlen(out) >= 20 })
	assert.EqualValues(t, 1, e.maxDeliveries(), "held entries were never claimed (no delivery counted)")
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	t.Logf("killed after %d of %d entries", e.xlen(out), n)

	code, _, stderr := e.run(3*time.Minute, "run", "--config", cfg, "--consumer", "replica-a", "--stop-when-idle")
	require.Equal(t, 0, code, tail(stderr, 20))
	assert.Zero(t, e.xlen(dlq), "no good entry dead-lettered")
	assert.Zero(t, e.pending(stream, group))
	counts := countByEventID(e.sinkRecords(out))
	for _, id := range ids {
		assert.GreaterOrEqual(t, counts[id], 1, "event %s processed", id)
	}
}

// TestCrashChargesOnlyTheExecutingEntry: an entry that kills auditproc each
// time it runs (here: it never returns, and the test kills the process
// while it runs, as the OOM killer would) is charged one attempt per crash,
// and after max_deliveries crashes it is dead-lettered with the reason
// crashed_host. The entries of its batch are never charged and are
// processed.
func TestCrashChargesOnlyTheExecutingEntry(t *testing.T) {
	e := newEnv(t)
	before := e.emitNumbered(stream, 5, "")
	killer := e.emit(stream, `{"hang":true,"actor":"x"}`)[0]
	after := e.emitNumbered(stream, 5, "")
	cfg := e.configWith("consumer: {block: 200ms, batch_size: 64, workers: 1, shutdown_timeout: 10s}\n"+
		"reclaim: {interval: 100ms, min_idle: 30s, max_deliveries: 3}\n",
		slowPipeline(`{"sink": "out"}`))

	running := func() bool {
		paths, _ := filepath.Glob(filepath.Join(e.stateDir(), "*.journal"))
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(killer)) {
				return true
			}
		}
		return false
	}
	for crash := 1; crash <= 3; crash++ {
		p := e.start("run", "--config", cfg, "--consumer", "replica-a")
		if crash > 1 { // the journal left by the last crash is read first
			waitFor(t, time.Minute, "the crash to be charged", func() bool { return len(p.logLines("crashed_entries_charged")) > 0 })
		}
		waitFor(t, time.Minute, "the killer entry to run", running)
		p.signal(syscall.SIGKILL)
		p.wait(10 * time.Second)
		if crash > 1 {
			charged := p.logLines("crashed_entries_charged")
			require.Len(t, charged, 1, "crash %d", crash)
			assert.Equal(t, []any{killer}, charged[0]["entry_ids"], "only the running entry is charged")
		}
		attempts, err := e.rdb.HGet(context.Background(), streambus.AttemptsKey(stream), killer).Int64()
		if crash == 1 {
			assert.ErrorIs(t, err, redis.Nil, "charged at the next start, not before")
		} else {
			require.NoError(t, err)
			assert.EqualValues(t, crash-1, attempts)
		}
		assert.Zero(t, e.xlen(dlq))
	}

	p := e.start("run", "--config", cfg, "--consumer", "replica-a", "--stop-when-idle")
	require.Equal(t, 0, p.wait(2*time.Minute), tail(p.stderr.String(), 20))
	dead := e.deadLetters(dlq)
	require.Len(t, dead, 1, "only the killer is dead-lettered")
	assert.Equal(t, killer, dead[0].Values[streambus.DeadLetterOriginalID])
	reason, _ := dead[0].Values[streambus.DeadLetterReason].(string)
	assert.True(t, strings.HasPrefix(reason, "crashed_host: "), reason)
	counts := countByEventID(e.sinkRecords(out))
	for _, id := range append(before, after...) {
		assert.GreaterOrEqual(t, counts[id], 1, "event %s processed", id)
	}
	assert.Zero(t, e.pending(stream, group))
	n, err := e.rdb.Exists(context.Background(), streambus.AttemptsKey(stream)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no attempt count left behind")
}
