package meter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/auditproc/auditproc/host/internal/meter"
	"github.com/auditproc/auditproc/host/internal/precheck"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// sample is an instance of the metered fixture, original or instrumented,
// with the number of ticks it made.
type sample struct {
	mod   api.Module
	ticks int
	probe []uint32
}

func newSample(t *testing.T, wasm []byte) *sample {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { _ = rt.Close(ctx) })
	s := &sample{}
	_, err := rt.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func(v uint32) { s.probe = append(s.probe, v) }).Export("probe").
		Instantiate(ctx)
	require.NoError(t, err)
	_, err = rt.NewHostModuleBuilder(meter.ImportModule).NewFunctionBuilder().
		WithFunc(func() { s.ticks++ }).Export(meter.ImportName).
		Instantiate(ctx)
	require.NoError(t, err)
	s.mod, err = rt.Instantiate(ctx, wasm)
	require.NoError(t, err)
	return s
}

func (s *sample) call(t *testing.T, name string, args ...uint64) uint64 {
	t.Helper()
	res, err := s.mod.ExportedFunction(name).Call(context.Background(), args...)
	require.NoError(t, err, name)
	if len(res) == 0 {
		return 0
	}
	return res[0]
}

func TestInstrumentKeepsBehaviour(t *testing.T) {
	wasm := wasmtest.Bytes(t, "metered")
	out, err := meter.Instrument(wasm, 9)
	require.NoError(t, err)
	orig, inst := newSample(t, wasm), newSample(t, out)

	calls := []struct {
		name string
		args []uint64
	}{
		{"started", nil},
		{"spin", []uint64{1}}, {"spin", []uint64{1000}},
		{"fib", []uint64{0}}, {"fib", []uint64{15}},
		{"indirect", []uint64{0, 21}}, {"indirect", []uint64{1, 12}},
		{"indirect", []uint64{2, 5}}, {"indirect", []uint64{3, 8}},
		{"global_twice", []uint64{50}},
		{"fill", []uint64{3 * 65536, 0xAB}}, {"copy", []uint64{100}},
		{"call_probe", []uint64{42}},
	}
	for _, c := range calls {
		assert.Equal(t, orig.call(t, c.name, c.args...), inst.call(t, c.name, c.args...), "%s%v", c.name, c.args)
	}
	assert.Equal(t, []uint32{42}, inst.probe, "imports before the new one keep their index")
	assert.Equal(t, uint64(7), inst.call(t, "started"), "the start function ran")
	assert.Zero(t, orig.ticks)
	assert.Positive(t, inst.ticks)

	_, err = inst.mod.ExportedFunction("indirect").Call(context.Background(), 4, 1)
	assert.ErrorContains(t, err, "invalid table access", "traps stay traps")
}

// TestInstrumentMergesDataSegments: active data segments a short gap apart
// become one (the gap zero-filled), so a standard-Go module's tens of
// thousands of segments cost wazero a handful of objects; the memory the
// module starts with is the same byte for byte.
func TestInstrumentMergesDataSegments(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"metered", "noop-go", "schema", "redact"} {
		t.Run(name, func(t *testing.T) {
			wasm := wasmtest.Bytes(t, name)
			out, err := meter.Instrument(wasm, 100)
			require.NoError(t, err)
			before, after := dataSegments(t, wasm), dataSegments(t, out)
			assert.LessOrEqual(t, after, before)
			if before > 100 {
				assert.Less(t, after, before/100, "segments merged")
			}
			t.Logf("%d data segments -> %d", before, after)

			// The memory before any code runs (no start functions).
			mem := func(wasm []byte) []byte {
				rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
				t.Cleanup(func() { _ = rt.Close(ctx) })
				wasi_snapshot_preview1.MustInstantiate(ctx, rt)
				for _, host := range []string{"env", meter.ImportModule, "auditproc"} {
					b := rt.NewHostModuleBuilder(host)
					compiled, err := rt.CompileModule(ctx, wasm)
					require.NoError(t, err)
					for _, def := range compiled.ImportedFunctions() {
						if mod, fn, _ := def.Import(); mod == host {
							b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(context.Context, api.Module, []uint64) {}),
								def.ParamTypes(), def.ResultTypes()).Export(fn)
						}
					}
					_, err = b.Instantiate(ctx)
					require.NoError(t, err)
				}
				mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions())
				require.NoError(t, err)
				b, ok := mod.Memory().Read(0, mod.Memory().Size())
				require.True(t, ok)
				return b
			}
			require.True(t, bytes.Equal(mem(wasm), mem(out)), "the initial memory differs")
		})
	}
}

// dataSegments counts a module's data segments.
func dataSegments(t *testing.T, wasm []byte) int {
	t.Helper()
	i := 8
	for i < len(wasm) {
		id := wasm[i]
		size, n := binary.Uvarint(wasm[i+1:])
		i += 1 + n
		if id == 11 {
			count, _ := binary.Uvarint(wasm[i:])
			return int(count)
		}
		i += int(size)
	}
	return 0
}

// TestInstrumentTickCount checks the metering exactly: with period p, the
// module ticks once every p+1 metered points (function entries and loop
// iterations), the count running on across calls, and a bulk memory
// instruction costs one point per 64 KiB.
func TestInstrumentTickCount(t *testing.T) {
	out, err := meter.Instrument(wasmtest.Bytes(t, "metered"), 9)
	require.NoError(t, err)
	s := newSample(t, out)
	base := s.ticks // the start function's entry: 1 point, no tick

	s.call(t, "spin", 99) // points 2 to 101: its entry and 99 iterations
	assert.Equal(t, base+10, s.ticks, "ticks at points 10, 20, ..., 100")
	s.call(t, "spin", 9) // points 102..111: tick at 110
	assert.Equal(t, base+11, s.ticks)

	// fib(n) enters fib F(n) = 2*fib(n+1)-1 times: fib(10) = 177 entries.
	before := s.ticks
	s.call(t, "fib", 10)
	assert.InDelta(t, 177/10, s.ticks-before, 1)

	// A fill of 40 x 64 KiB costs 40 points at once: the next metered point
	// ticks, however few points the counter had used.
	s2 := newSample(t, out)
	s2.call(t, "nop") // entries: start, nop = 2 points
	n := s2.ticks
	s2.call(t, "fill", 40*65536, 1)
	assert.Equal(t, n+1, s2.ticks, "a charge that crosses the period ticks before the fill runs")
	s2.call(t, "nop")
	assert.Equal(t, n+1, s2.ticks, "and the counter starts again from the period")

	// A table fill of 40 x 4096 elements, the same.
	s2.call(t, "tfill", 40*4096)
	assert.Equal(t, n+2, s2.ticks, "a large table fill is charged too")

	// memory.grow costs one point plus one per page it may copy: a grow of
	// the 64-page memory costs 65 points, past the period of 9, so each
	// grow ticks before it runs.
	s3 := newSample(t, out)
	n = s3.ticks
	s3.call(t, "grow", 1)
	assert.Equal(t, n+1, s3.ticks, "a grow of a 64-page memory costs 65 points: it ticks")
	s3.call(t, "grow", 1)
	assert.Equal(t, n+2, s3.ticks)
}

// TestInstrumentBuiltModules instruments every module the build makes
// (standard Go, C and hand-written plugins and fixtures) and checks that
// wazero accepts the result with the same exports, the same function names
// and one more import. (It compiles with wazero's interpreter, which
// validates as the compiler does, in a fraction of the time; the host's
// tests run the instrumented plugins compiled.)
func TestInstrumentBuiltModules(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	paths, err := filepath.Glob(filepath.Join(wasmtest.Dir(t), "*.wasm"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".wasm")
		t.Run(name, func(t *testing.T) {
			wasm, err := os.ReadFile(p)
			require.NoError(t, err)
			orig, err := rt.CompileModule(ctx, wasm)
			require.NoError(t, err, "every module the build makes is valid WebAssembly (the refused fixtures break the ABI, not the format)")
			out, err := meter.Instrument(wasm, 1<<12)
			if name == "import-guard" {
				require.ErrorIs(t, err, meter.ErrUnsupported, "a module may not import the meter's function itself")
				return
			}
			require.NoError(t, err)
			inst, err := rt.CompileModule(ctx, out)
			require.NoError(t, err)

			require.Equal(t, sortedKeys(orig.ExportedFunctions()), sortedKeys(inst.ExportedFunctions()))
			for name, def := range orig.ExportedFunctions() {
				got := inst.ExportedFunctions()[name]
				assert.Equal(t, def.ParamTypes(), got.ParamTypes(), name)
				assert.Equal(t, def.ResultTypes(), got.ResultTypes(), name)
				if !strings.Contains(def.DebugName(), ".$") { // a name from the name section, not an index
					assert.Equal(t, def.DebugName(), got.DebugName(), "%s: the name section follows the renumbering", name)
				}
			}
			imps := imports(orig)
			imps = append(imps, meter.ImportModule+"."+meter.ImportName)
			assert.Equal(t, imps, imports(inst))
		})
	}
}

// TestInstrumentGoRuns runs an instrumented standard-Go module, whose
// runtime uses most of what the rewrite touches, through its initialisation.
func TestInstrumentGoRuns(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	ticks := 0
	_, err := rt.NewHostModuleBuilder(meter.ImportModule).NewFunctionBuilder().
		WithFunc(func() { ticks++ }).Export(meter.ImportName).Instantiate(ctx)
	require.NoError(t, err)
	out, err := meter.Instrument(wasmtest.Bytes(t, "panic-go"), 1<<10)
	require.NoError(t, err)
	_, err = rt.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	require.NoError(t, err)
	assert.Positive(t, ticks, "the Go runtime's start-up loops are metered")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func imports(c wazero.CompiledModule) []string {
	var out []string
	for _, def := range c.ImportedFunctions() {
		mod, name, _ := def.Import()
		out = append(out, mod+"."+name)
	}
	return out
}

// module assembles a module from sections (id, payload).
func module(sections ...[]byte) []byte {
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	for _, s := range sections {
		out = append(out, s[0], byte(len(s)-1))
		out = append(out, s[1:]...)
	}
	return out
}

// oneFunction is a module of one function () -> () with the given body
// instructions (without its end).
func oneFunction(code ...byte) []byte {
	body := append([]byte{0x00}, code...)
	body = append(body, 0x0B)
	return module(
		[]byte{1, 1, 0x60, 0, 0},
		[]byte{3, 1, 0},
		append([]byte{10, 1, byte(len(body))}, body...),
	)
}

func TestInstrumentRefuses(t *testing.T) {
	valid := oneFunction()
	tests := []struct {
		name string
		wasm []byte
		is   error
		want string
	}{
		{"empty", nil, meter.ErrMalformed, "header"},
		{"other version", []byte{0x00, 'a', 's', 'm', 0x0D, 0x00, 0x01, 0x00}, meter.ErrMalformed, "header"},
		{"truncated section", valid[:len(valid)-2], meter.ErrMalformed, "bytes wanted"},
		{"sections out of order", module([]byte{3, 1, 0}, []byte{1, 1, 0x60, 0, 0}), meter.ErrMalformed, "out of order"},
		{"unknown section", module([]byte{42, 0}), meter.ErrUnsupported, "section id 42"},
		{"atomics", oneFunction(0xFE, 0x03, 0x00), meter.ErrUnsupported, "instruction 0xfe"},
		{"exception handling", oneFunction(0x06, 0x40, 0x0B), meter.ErrUnsupported, "instruction 0x06"},
		{"unknown 0xFC", oneFunction(0xFC, 0x20), meter.ErrUnsupported, "0xFC 32"},
		{"already imports the guard", module(
			[]byte{1, 1, 0x60, 0, 0},
			append(append([]byte{2, 1, byte(len(meter.ImportModule))}, meter.ImportModule...), 1, 'x', 0x00, 0x00),
		), meter.ErrUnsupported, "already imports"},
		{"bad LEB", oneFunction(0x41, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), meter.ErrMalformed, "longer than 10 bytes"},
		{"code count", module([]byte{1, 1, 0x60, 0, 0}, []byte{3, 1, 0}, []byte{10, 0}), meter.ErrMalformed, "0 function bodies for 1 functions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := meter.Instrument(tt.wasm, 100)
			require.Error(t, err)
			assert.True(t, errors.Is(err, tt.is), "%v is not %v", err, tt.is)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := meter.Instrument(valid, 0)
	assert.ErrorContains(t, err, "period 0 out of range")
	_, err = meter.Instrument(valid, 100)
	assert.NoError(t, err)
}

// FuzzInstrument: the rewrite never panics, and the instrumented module is
// valid exactly when the original is (wazero's validation, after the
// host's pre-check as Load runs it): what wazero refused before it refuses
// after, so no index the rewrite adds (the counter global, the scratch local,
// the tick function's type) becomes reachable.
func FuzzInstrument(f *testing.F) {
	f.Add(oneFunction())
	f.Add(oneFunction(0x03, 0x40, 0x0B))
	f.Add(oneFunction(0x41, 0x01, 0x24, 0x00))       // global.set 0 without globals
	f.Add(oneFunction(0x20, 0x00, 0x1A))             // local.get 0 without locals
	f.Add(oneFunction(0x02, 0x01, 0x0B))             // block of type 1, the added one
	f.Add(oneFunction(0x41, 0x00, 0x11, 0x01, 0x00)) // call_indirect of type 1
	for _, name := range []string{"metered", "loop", "tag", "recursion", "hostile/counter-refill", "hostile/scratch-local", "hostile/table-fill"} {
		f.Add(wasmtest.Bytes(f, name))
	}
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	valid := func(wasm []byte) error {
		c, err := rt.CompileModule(ctx, wasm)
		if err == nil {
			_ = c.Close(ctx)
		}
		return err
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		if precheck.Check(wasm) != nil {
			return // the host refuses it before anything else sees it
		}
		out, err := meter.Instrument(wasm, 1000)
		if err != nil {
			return
		}
		before, after := valid(wasm), valid(out)
		if (before == nil) != (after == nil) {
			t.Fatalf("the original compiles: %v; the instrumented: %v", before, after)
		}
	})
}
