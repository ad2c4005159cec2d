package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTopOnce runs a replica under load and prints one `top --once` frame:
// the stream, lag, pending and dead letters from Redis, the replica (ready,
// rates) and the plugin's verdict rates and latency from its /metrics.
func TestTopOnce(t *testing.T) {
	e := newEnv(t)
	const n = 20000
	e.emitNumbered(stream, n, "")
	e.emit(stream, `{"event_id":"r-1","reject":true}`, `{"event_id":"r-2","reject":true}`)
	metrics := freeAddr(t)
	cfg := e.config(pipeline(`{"sink": "out"}`))
	p := e.start("run", "--config", cfg, "--consumer", "replica-a", "--metrics-addr", metrics)
	waitFor(t, 60*time.Second, "processing to start", func() bool { return e.xlen(out) >= 200 })

	code, stdout, stderr := e.run(30*time.Second, "top", "--once", "--config", cfg, "--metrics", metrics)
	require.Equal(t, 0, code, stderr)
	t.Logf("auditproc top --once:\n%s", stdout)
	assert.Contains(t, stdout, "stream "+stream+"  group "+group)
	for _, col := range []string{"LAG", "PENDING", "DLQ LENGTH", "IN/s", "OUT/s", "REPLICA", "READY", "PLUGIN", "OK/s", "REJECT/s", "P50", "P99"} {
		assert.Contains(t, stdout, col)
	}
	lines := strings.Split(stdout, "\n")
	var replica, plugin string
	for _, l := range lines {
		if strings.HasPrefix(l, metrics) {
			replica = l
		}
		if strings.HasPrefix(l, "e2e ") {
			plugin = l
		}
	}
	require.NotEmpty(t, replica, "a row for the replica")
	assert.Contains(t, replica, "yes", "the replica is ready")
	require.NotEmpty(t, plugin, "a row for the plugin")
	f := strings.Fields(plugin)
	require.Len(t, f, 7, plugin)
	assert.NotEqual(t, "0.0", f[1], "ok verdicts per second while the load runs")
	assert.NotEqual(t, "-", f[5], "a p50 latency")

	waitFor(t, 120*time.Second, "the stream to drain", func() bool { return len(e.deadLetters(dlq)) == 2 && e.pending(stream, group) == 0 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	// Once drained: no lag, nothing pending, the dead-letter stream holds
	// the two dead letters and the replica's closing checkpoint there.
	code, stdout, stderr = e.run(30*time.Second, "top", "--once", "--config", cfg, "--metrics", freeAddr(t))
	require.Equal(t, 0, code, stderr)
	for _, l := range strings.Split(stdout, "\n") {
		if f := strings.Fields(l); len(f) == 6 && f[0] != "STREAM" {
			assert.Equal(t, []string{"0", "0", "3"}, f[1:4], "lag, pending, dead-letter stream length: %s", l)
		}
	}
	assert.Contains(t, stdout, "unreachable", "a replica that does not answer is shown as such")
}
