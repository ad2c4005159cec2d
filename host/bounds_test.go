package host_test

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/host/internal/meter"
	"github.com/auditproc/auditproc/host/internal/precheck"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// TestUnmeterableModuleRefused: a module the meter cannot instrument is
// refused, trusted or not, by plugin check's static part and by a load: no
// weaker guard runs it. fallback-tree has one never-called function with
// 50,000 locals, to which the meter's scratch local would add one; it used
// to run under wazero's guard, which checks the deadline only at loop
// headers: its auditproc_process, recursing twice per level 60 levels deep
// without a loop, ran for good and SIGTERM was ignored. import-guard
// imports the meter's own function.
func TestUnmeterableModuleRefused(t *testing.T) {
	for _, name := range []string{"hostile/fallback-tree", "import-guard"} {
		for _, trusted := range []bool{false, true} {
			spec := host.PluginSpec{Name: "hostile", Path: wasmtest.Path(t, name), Deadline: 100 * time.Millisecond, Trusted: trusted}
			p, err := host.Load(context.Background(), spec, host.Config{})
			if p != nil {
				_ = p.Close(context.Background())
			}
			require.ErrorIs(t, err, host.ErrModuleRefused, "%s, trusted: %v", name, trusted)
			_, err = host.Inspect(context.Background(), mustRead(t, spec.Path))
			require.ErrorIs(t, err, host.ErrModuleRefused, name)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
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

// TestCompileMemoryBounded: compiling takes some 340 bytes of host memory
// per byte of the function being compiled (a 7 MB function took 2.4 GB of
// RSS in plugin check). A body past precheck.MaxFunctionBytes is refused
// before anything is compiled, and the largest body allowed compiles, for
// plugin check (Inspect) and a load alike, in a bounded heap.
func TestCompileMemoryBounded(t *testing.T) {
	big := straightLineModule(2_000_000)
	grew := peakHeapDuring(func() {
		_, err := host.Inspect(context.Background(), big)
		require.ErrorIs(t, err, host.ErrModuleRefused)
		_, err = host.Load(context.Background(), host.PluginSpec{Name: "straight", Wasm: big}, host.Config{CacheDir: t.TempDir()})
		require.ErrorIs(t, err, host.ErrModuleRefused)
		assert.Contains(t, err.Error(), "body of function")
	})
	assert.Less(t, grew, int64(16<<20), "refusing a %d-byte module: heap grew by %d MiB", len(big), grew>>20)

	largest := straightLineModule(precheck.MaxFunctionBytes - 16)
	grew = peakHeapDuring(func() {
		_, err := host.Inspect(context.Background(), largest)
		require.NoError(t, err)
	})
	assert.Less(t, grew, int64(256<<20), "Inspect of a %d-byte module: heap grew by %d MiB", len(largest), grew>>20)
	grew = peakHeapDuring(func() {
		p, err := host.Load(context.Background(), host.PluginSpec{Name: "straight", Wasm: largest}, host.Config{CacheDir: t.TempDir()})
		require.NoError(t, err)
		_ = p.Close(context.Background())
	})
	assert.Less(t, grew, int64(256<<20), "Load of a %d-byte module: heap grew by %d MiB", len(largest), grew>>20)
}

// nestedLoopsModule is a valid ABI module with one extra function of n
// nested empty loops (3n bytes of code).
func nestedLoopsModule(n int) []byte { return nestedModule(n, 0x03) }

// nestedModule is a valid ABI module with one extra function of n nested
// empty structures of op (0x02 block, 0x03 loop).
func nestedModule(n int, op byte) []byte {
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
		big = append(big, op, 0x40) // block or loop, empty type
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

// TestNestedLoopsLoad: wazero's compile time grows with the square of the
// nesting depth, steeply for metered loops: a 60 KB module of 20,000 nested
// loops kept plugin check (Inspect) and a load compiling for more than a
// minute, a 3 MB one for good. Past meter.MaxLoopNesting, MaxNesting or
// MaxWork a module is refused, trusted or not; at the limits it loads.
func TestNestedLoopsLoad(t *testing.T) {
	for _, tt := range []struct {
		name string
		wasm []byte
		ok   bool
	}{
		{"20000 loops", nestedLoopsModule(20_000), false},
		{"a million loops", nestedLoopsModule(1_000_000), false},
		{"MaxLoopNesting+1 loops", nestedLoopsModule(meter.MaxLoopNesting + 1), false},
		{"MaxLoopNesting loops", nestedLoopsModule(meter.MaxLoopNesting), true},
		{"MaxNesting+1 blocks", nestedModule(meter.MaxNesting+1, 0x02), false},
		{"MaxNesting blocks", nestedModule(meter.MaxNesting, 0x02), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, trusted := range []bool{false, true} {
				done := make(chan error, 2)
				go func() {
					_, err := host.Inspect(context.Background(), tt.wasm)
					done <- err
				}()
				go func() {
					p, err := host.Load(context.Background(), host.PluginSpec{Name: "nested", Wasm: tt.wasm, Trusted: trusted}, host.Config{CacheDir: t.TempDir()})
					if err == nil {
						_ = p.Close(context.Background())
					}
					done <- err
				}()
				for range 2 {
					select {
					case err := <-done:
						if tt.ok {
							assert.NoError(t, err)
						} else {
							assert.ErrorIs(t, err, host.ErrModuleRefused, "trusted: %v", trusted)
						}
					case <-time.After(time.Minute):
						t.Fatalf("loading a %d-byte module still running after a minute (a liveness bound)", len(tt.wasm))
					}
				}
			}
		})
	}
}
