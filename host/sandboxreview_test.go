package host_test

import (
	"context"
	"runtime"
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

// leb appends n as unsigned LEB128.
func leb(b []byte, n uint64) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// straightLineModule is a valid ABI module whose auditproc_process is
// i32.const 0, then n times i32.eqz (one byte each), drop, i32.const 0: n
// bytes of code, well under the precheck's 7,654,321 bytes per function
// for n up to 7.6 million.
func straightLineModule(n int) []byte {
	sec := func(id byte, b []byte) []byte { return append(leb([]byte{id}, uint64(len(b))), b...) }
	name := func(b []byte, s string) []byte { return append(leb(b, uint64(len(s))), s...) }
	types := []byte{3, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7f}
	funcs := []byte{3, 0, 1, 2}
	mem := []byte{1, 0, 1}
	exp := []byte{4}
	exp = append(name(exp, "memory"), 2, 0)
	exp = append(name(exp, "auditproc_abi_v1"), 0, 0)
	exp = append(name(exp, "auditproc_alloc"), 0, 1)
	exp = append(name(exp, "auditproc_process"), 0, 2)
	big := append([]byte{0, 0x41, 0}, make([]byte, n)...)
	for i := 3; i < len(big); i++ {
		big[i] = 0x45 // i32.eqz
	}
	big = append(big, 0x1a, 0x41, 0, 0x0b)
	code := []byte{3, 2, 0, 0x0b, 5, 0, 0x41, 0x80, 0x08, 0x0b}
	code = append(leb(code, uint64(len(big))), big...)
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	out = append(out, sec(1, types)...)
	out = append(out, sec(3, funcs)...)
	out = append(out, sec(5, mem)...)
	out = append(out, sec(7, exp)...)
	return append(out, sec(10, code)...)
}

// peakHeapDuring samples the Go heap in use while f runs and returns its
// growth over the heap before f.
func peakHeapDuring(f func()) int64 {
	before := heapInUse()
	var peak uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	return int64(peak) - int64(before)
}

// TestCompileMemoryBounded: a 2 MB module of straight-line code (one
// function of two million i32.eqz, inside every precheck limit) must not
// make plugin check (Inspect) or a load allocate hundreds of megabytes.
// wazero's interpreter (validate) and compiler hold some 340 bytes per
// instruction of the function being compiled: the precheck's 7,654,321
// bytes per function let a 7 MB module take 2.4 GB of RSS and 18 s in
// plugin check, and nine such functions fit in the 64 MiB module limit.
func TestCompileMemoryBounded(t *testing.T) {
	wasm := straightLineModule(2_000_000)
	grew := peakHeapDuring(func() {
		_, err := host.Inspect(context.Background(), wasm)
		require.NoError(t, err)
	})
	assert.Less(t, grew, int64(256<<20), "Inspect of a %d-byte module: heap grew by %d MiB", len(wasm), grew>>20)
	grew = peakHeapDuring(func() {
		p, err := host.Load(context.Background(), host.PluginSpec{Name: "straight", Wasm: wasm}, host.Config{CacheDir: t.TempDir()})
		require.NoError(t, err)
		_ = p.Close(context.Background())
	})
	assert.Less(t, grew, int64(256<<20), "Load of a %d-byte module: heap grew by %d MiB", len(wasm), grew>>20)
}

// nestedLoopsModule is a valid ABI module with one extra function of n
// nested empty loops (3n bytes of code).
func nestedLoopsModule(n int) []byte {
	sec := func(id byte, b []byte) []byte { return append(leb([]byte{id}, uint64(len(b))), b...) }
	name := func(b []byte, s string) []byte { return append(leb(b, uint64(len(s))), s...) }
	types := []byte{3, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7f}
	funcs := []byte{4, 0, 1, 2, 0}
	mem := []byte{1, 0, 1}
	exp := []byte{4}
	exp = append(name(exp, "memory"), 2, 0)
	exp = append(name(exp, "auditproc_abi_v1"), 0, 0)
	exp = append(name(exp, "auditproc_alloc"), 0, 1)
	exp = append(name(exp, "auditproc_process"), 0, 2)
	big := []byte{0}
	for range n {
		big = append(big, 0x03, 0x40) // loop
	}
	for range n + 1 {
		big = append(big, 0x0b) // end
	}
	code := []byte{4, 2, 0, 0x0b, 5, 0, 0x41, 0x80, 0x08, 0x0b, 4, 0, 0x41, 0, 0x0b}
	code = append(leb(code, uint64(len(big))), big...)
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	out = append(out, sec(1, types)...)
	out = append(out, sec(3, funcs)...)
	out = append(out, sec(5, mem)...)
	out = append(out, sec(7, exp)...)
	return append(out, sec(10, code)...)
}

// TestNestedLoopsLoad: a 60 KB module whose one (never called) function
// nests 20,000 empty loops must be loaded or refused by plugin check
// (Inspect) and Load, not hang them. Instrumented, every loop holds the
// meter's check (a branch and a call), and wazero's compiler takes time
// that grows with the cube of the nesting: 1,000 loops 0.2 s, 3,000 1.6 s,
// 6,000 7.4 s (trusted, not instrumented: 0.9 s), 20,000 more than
// 100 s; a 3 MB module of a million nested loops hangs plugin check,
// config check and run for good.
func TestNestedLoopsLoad(t *testing.T) {
	wasm := nestedLoopsModule(20_000)
	done := make(chan error, 2)
	go func() {
		_, err := host.Inspect(context.Background(), wasm)
		done <- err
	}()
	go func() {
		p, err := host.Load(context.Background(), host.PluginSpec{Name: "loops", Wasm: wasm}, host.Config{CacheDir: t.TempDir()})
		if err == nil {
			_ = p.Close(context.Background())
		}
		done <- err
	}()
	for range 2 {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("loading a %d-byte module still running after 60 s", len(wasm))
		}
	}
}
