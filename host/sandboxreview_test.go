package host_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// processOrHang runs one event through a fresh worker of the built fixture
// name, loaded with spec, and reports whether the call returned within
// wait. A call that never returns is left running (nothing can stop it),
// and the plugin is not closed: closing would wait for it.
func processOrHang(t *testing.T, name string, spec host.PluginSpec, data []byte, wait time.Duration) (host.Result, bool) {
	t.Helper()
	spec.Path = wasmtest.Path(t, name)
	spec.Name = "hostile"
	p, err := host.Load(context.Background(), spec, host.Config{})
	require.NoError(t, err)
	w, err := host.NewPipeline(p).NewWorker(context.Background())
	require.NoError(t, err)
	done := make(chan host.Result, 1)
	go func() { done <- w.Process(context.Background(), testEvent(data)) }()
	select {
	case res := <-done:
		w.Release()
		_ = p.Close(context.Background())
		return res, true
	case <-time.After(wait):
		return host.Result{}, false
	}
}

// TestFallbackGuardStopsLoopFreeRecursion: a module the meter refuses (one
// never-called function with exactly 50,000 locals, the precheck's limit;
// the meter's scratch local would be the 50,001st) runs under wazero's
// guard, which checks the deadline only at loop headers. Its
// auditproc_process recurses twice per level, 60 levels, without a loop:
// the call must still stop at its 100 ms deadline. It does not: the call
// never returns (plugin test ran it 10 minutes, ignoring SIGTERM).
func TestFallbackGuardStopsLoopFreeRecursion(t *testing.T) {
	res, returned := processOrHang(t, "hostile/fallback-tree", host.PluginSpec{Deadline: 100 * time.Millisecond}, boom, 10*time.Second)
	require.True(t, returned, "a call with a 100 ms deadline still running after 10 s")
	assert.Equal(t, abi.VerdictRetry, res.Verdict)
	assert.ErrorIs(t, res.Err, host.ErrDeadline)
}
