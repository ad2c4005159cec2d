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
	"github.com/auditproc/auditproc/host/internal/meter"
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
	const want = "code section at byte 105: too many parameters and locals of function 2: 4294967297, the limit is 49999"

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

// TestMeterCounterUnreachable: the meter appends a global (its counter), a
// local, a function import and maybe a type; a module naming one of them
// is invalid as written and must stay refused, not become valid and reach
// the counter (a loop refilling it never meets its deadline). The fixtures
// are built with wat2wasm --no-check; the byte modules cover the other
// indices.
func TestMeterCounterUnreachable(t *testing.T) {
	for _, name := range []string{"hostile/counter-refill", "hostile/scratch-local"} {
		t.Run(name, func(t *testing.T) {
			wasm := wasmtest.Bytes(t, name)
			_, err := meter.Instrument(wasm, 4096)
			require.ErrorIs(t, err, meter.ErrMalformed, "the meter refuses it on its own")
			for _, trusted := range []bool{false, true} {
				_, err = host.Load(context.Background(), host.PluginSpec{Name: "hostile", Wasm: wasm, Trusted: trusted}, host.Config{})
				var le *host.LoadError
				require.ErrorAs(t, err, &le, "trusted=%v", trusted)
				assert.Contains(t, err.Error(), "invalid", "wazero's validation of the module as written")
			}
			_, err = host.Inspect(context.Background(), wasm)
			require.Error(t, err)
		})
	}

	// One function () -> () with body code, as bytes: no globals, no
	// locals, one type.
	oneFunction := func(code ...byte) []byte {
		body := append(append([]byte{0x00}, code...), 0x0B)
		out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00, 1, 4, 1, 0x60, 0, 0, 3, 2, 1, 0}
		out = append(out, 10, byte(len(body)+2), 1, byte(len(body)))
		return append(out, body...)
	}
	for name, wasm := range map[string][]byte{
		"global.get of the counter":        oneFunction(0x23, 0x00, 0x1A),
		"global.set of the counter":        oneFunction(0x41, 0x01, 0x24, 0x00),
		"the scratch local":                oneFunction(0x41, 0x01, 0x21, 0x00),
		"a block of the tick's type":       oneFunction(0x02, 0x01, 0x0B),
		"call_indirect of the tick's type": oneFunction(0x41, 0x00, 0x11, 0x01, 0x00),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := meter.Instrument(wasm, 4096)
			require.ErrorIs(t, err, meter.ErrMalformed)
			assert.Contains(t, err.Error(), "out of range")
		})
	}
	// The exported counter: a module exporting global 0 without globals.
	export := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00, 7, 5, 1, 1, 'g', 0x03, 0x00}
	_, err := meter.Instrument(export, 4096)
	require.ErrorIs(t, err, meter.ErrMalformed)
}

// TestSharedCache: plugins loaded with one Config.Cache share it; its
// creator may close it once they are loaded, and the last plugin to close
// releases it.
func TestSharedCache(t *testing.T) {
	ctx := context.Background()
	cache, err := host.NewCache(t.TempDir())
	require.NoError(t, err)
	cfg := host.Config{Cache: cache}
	var plugins []*host.Plugin
	for _, name := range []string{"tag", "tag", "noop-c"} {
		p, err := host.Load(ctx, host.PluginSpec{Name: name, Path: wasmtest.Path(t, name)}, cfg)
		require.NoError(t, err)
		plugins = append(plugins, p)
	}
	require.NoError(t, cache.Close(ctx))
	require.NoError(t, plugins[0].Close(ctx))
	w, err := host.NewPipeline(plugins[1:]...).NewWorker(ctx)
	require.NoError(t, err)
	res := w.Process(ctx, testEvent(event300))
	require.NoError(t, res.Err)
	w.Release()
	for _, p := range plugins[1:] {
		require.NoError(t, p.Close(ctx))
	}
	_, err = host.Load(ctx, host.PluginSpec{Name: "late", Path: wasmtest.Path(t, "tag")}, cfg)
	require.ErrorContains(t, err, "compilation cache: closed", "released with the last plugin")
}
