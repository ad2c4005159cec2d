package host_test

import (
	"context"
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// boom is an event on which the hostile fixtures misbehave.
var boom = []byte(`{"event_id":"e-boom","action":"boom"}`)

// TestLocalsBombRefused: a function declaring 0xFFFFFFFF locals (a 128-byte
// module) is refused before wazero decodes it, by Inspect (plugin check) and
// by Load (plugin test, config check, run) whatever the guard, with an error
// naming the function and the limit.
func TestLocalsBombRefused(t *testing.T) {
	path := wasmtest.Path(t, "hostile/locals-bomb")
	wasm, err := os.ReadFile(path)
	require.NoError(t, err)
	const want = "code section at byte 105: too many parameters and locals of function 2: 4294967297, the limit is 50000"

	_, err = host.Inspect(context.Background(), wasm)
	require.ErrorIs(t, err, host.ErrModuleRefused)
	assert.Contains(t, err.Error(), want)

	for _, trusted := range []bool{false, true} {
		_, err = host.Load(context.Background(), host.PluginSpec{Name: "bomb", Path: path, Trusted: trusted}, host.Config{})
		require.ErrorIs(t, err, host.ErrModuleRefused)
		var le *host.LoadError
		require.ErrorAs(t, err, &le)
		assert.Equal(t, "bomb", le.Plugin)
		assert.Contains(t, err.Error(), want)
	}
}

// heapInUse is the Go heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestTableGrowBounded: table.grow of 0xfffffff0 elements, then growth 65536
// at a time, returns -1 in the guest at the host's bound (the fixture then
// traps: retry), on every guard; the host's heap stays within the bound's
// 8 MiB of references plus slack, and the worker goes on with a fresh
// instance. table.fill over the whole bounded table is charged by the meter
// and stopped at the deadline.
func TestTableGrowBounded(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		w := worker(t, load(t, "hostile/table-grow", host.PluginSpec{Trusted: trusted}))
		before := heapInUse()
		for range 3 {
			res := w.Process(context.Background(), testEvent(boom))
			require.Equal(t, abi.VerdictRetry, res.Verdict, "trusted=%v: the big grow must fail (-1) and the fixture trap", trusted)
			require.ErrorIs(t, res.Err, host.ErrTrap)
			assert.Contains(t, res.Err.Error(), "unreachable")
		}
		peak := heapInUse()
		assert.Less(t, int64(peak)-int64(before), int64(64<<20), "trusted=%v: heap grew from %d to %d bytes", trusted, before, peak)
		res := w.Process(context.Background(), testEvent(event300))
		require.NoError(t, res.Err)
		assert.Equal(t, abi.VerdictOK, res.Verdict)
	}

	w := worker(t, load(t, "hostile/table-fill", host.PluginSpec{Deadline: 100e6}))
	res := w.Process(context.Background(), testEvent(boom))
	require.ErrorIs(t, res.Err, host.ErrDeadline)
}
