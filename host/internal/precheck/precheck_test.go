package precheck_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"

	"github.com/auditproc/auditproc/host/internal/precheck"
	"github.com/auditproc/auditproc/host/internal/wasmbin"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// section is one section: its id and payload.
func section(id byte, payload ...[]byte) []byte {
	var p []byte
	for _, b := range payload {
		p = append(p, b...)
	}
	return append(wasmbin.AppendU32([]byte{id}, uint32(len(p))), p...)
}

func module(sections ...[]byte) []byte {
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	for _, s := range sections {
		out = append(out, s...)
	}
	return out
}

func u32(v uint32) []byte { return wasmbin.AppendU32(nil, v) }

// oneFunction is a module with one function () -> () whose body is locals
// (the local declarations) and code.
func oneFunction(locals, code []byte) []byte {
	body := append(append([]byte{}, locals...), code...)
	body = append(body, 0x0B)
	return module(
		section(1, []byte{1, 0x60, 0, 0}),
		section(3, []byte{1, 0}),
		section(10, []byte{1}, u32(uint32(len(body))), body),
	)
}

func TestCheckAcceptsSmallModules(t *testing.T) {
	require.NoError(t, precheck.Check(oneFunction([]byte{0}, nil)))
	require.NoError(t, precheck.Check(oneFunction([]byte{2, 10, 0x7F, 20, 0x7E}, nil)))
}

// TestCheckAcceptsBuiltModules: every module the repository builds (Go, C
// and text-format plugins) keeps the limits, except the hostile ones that
// are there to break them.
func TestCheckAcceptsBuiltModules(t *testing.T) {
	dir := wasmtest.Dir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.wasm"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		wasm, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.NoError(t, precheck.Check(wasm), filepath.Base(f))
	}
}

func TestCheckRefuses(t *testing.T) {
	bomb := []byte{1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x7E} // one group of 0xFFFFFFFF i64
	tests := []struct {
		name string
		wasm []byte
		want string
	}{
		{"locals bomb", oneFunction(bomb, nil), "too many parameters and locals of function 0: 4294967295, the limit is 49999"},
		{"locals over two groups", oneFunction([]byte{2, 0xA8, 0xC3, 0x01, 0x7F, 0xA9, 0xC3, 0x01, 0x7F}, nil), // 25000 + 25001
			"too many parameters and locals of function 0: 50001"},
		{"local groups count", oneFunction([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, nil), "4294967295"},
		{"no header", []byte("not wasm"), "header"},
		{"truncated", oneFunction([]byte{0}, nil)[:20], "malformed"},
		{"type count", module(section(1, u32(0xFFFFFFFF))), "too many types: 4294967295, the limit is 1000000"},
		{"type count over the bytes", module(section(1, u32(1000))), "1000 types declared in the 0 bytes left"},
		{"parameters", module(section(1, []byte{1, 0x60}, u32(0xFFFFFFFF))), "too many parameters of type 0"},
		{"imports", module(section(2, u32(0xFFFFFFF0))), "too many imports"},
		{"functions", module(section(3, u32(5000), make([]byte, 4000))), "5000 functions declared in the 4000 bytes left"},
		{"table minimum", module(section(4, []byte{1, 0x70, 0x00}, u32(0xFFFFFFF0))), "too many table elements (the minimum sizes of all tables): 4294967280"},
		{"tables together", module(section(4, []byte{2, 0x70, 0x00}, u32(precheck.MaxTableElements), []byte{0x70, 0x00, 0x01})), "too many table elements"},
		{"shared table", module(section(4, []byte{1, 0x70, 0x02, 0x00})), "limits flags 0x02"},
		{"globals", module(section(6, u32(precheck.MaxGlobals+1), make([]byte, precheck.MaxGlobals+1))), "too many globals"},
		{"exports", module(section(7, u32(0xFFFFFFFF))), "too many exports"},
		{"element segments", module(section(9, u32(0xFFFFFFFF))), "too many element segments"},
		{"elements", module(section(9, []byte{1, 0x01, 0x00}, u32(0xFFFFFFFF))), "too many elements of element segment 0"},
		{"data segments", module(section(11, u32(0xFFFFFFFF))), "too many data segments"},
		{"function bodies", module(section(10, u32(0xFFFFFFFF))), "too many function bodies"},
		{"body size", module(section(10, []byte{1}, u32(precheck.MaxFunctionBytes+1))), "too many bytes of the body of function 0"},
		{"name section", module(section(0, []byte{4, 'n', 'a', 'm', 'e'}, make([]byte, precheck.MaxNameSectionBytes))), "the name section has"},
		{"function names", module(section(0, []byte{4, 'n', 'a', 'm', 'e', 1, 5}, u32(0xFFFFFFFF))), "too many function names: 4294967295"},
		{"local names", module(section(0, []byte{4, 'n', 'a', 'm', 'e', 2, 7, 1, 0}, u32(0xFFFFFFFF))), "local names of one function"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := precheck.Check(tt.wasm)
			require.ErrorIs(t, err, precheck.ErrRefused)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestCheckRefusesLargeModules(t *testing.T) {
	big := module(section(0, []byte{1, 'x'}, make([]byte, precheck.MaxModuleBytes)))
	err := precheck.Check(big)
	require.ErrorIs(t, err, precheck.ErrRefused)
	assert.Contains(t, err.Error(), "the limit is 67108864")
}

// growModule is a module with the given table section payload and an
// exported function grow(n) -> table.grow(ref.null, n) on table 0.
func growModule(tables []byte) []byte {
	code := []byte{0x00, 0xD0, 0x70, 0x20, 0x00, 0xFC, 15, 0x00, 0x0B} // ref.null func, local.get 0, table.grow 0
	return module(
		section(1, []byte{1, 0x60, 1, 0x7F, 1, 0x7F}),
		section(3, []byte{1, 0}),
		section(4, tables),
		section(7, []byte{1, 4, 'g', 'r', 'o', 'w', 0x00, 0x00}),
		section(10, []byte{1}, u32(uint32(len(code))), code),
	)
}

func grow(t *testing.T, wasm []byte, deltas ...uint32) []int32 {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.Instantiate(ctx, wasm)
	require.NoError(t, err)
	var out []int32
	for _, d := range deltas {
		res, err := mod.ExportedFunction("grow").Call(ctx, uint64(d))
		require.NoError(t, err)
		out = append(out, int32(uint32(res[0])))
	}
	return out
}

func TestBoundTables(t *testing.T) {
	const bound = precheck.MaxTableElements
	unbounded := growModule([]byte{1, 0x70, 0x00, 0x00}) // table 0 funcref, no maximum
	require.NoError(t, precheck.Check(unbounded))
	assert.Equal(t, []int32{0, int32(bound - 1)}, grow(t, unbounded, bound-1, 1), "wazero alone lets the table grow")

	bounded := precheck.BoundTables(unbounded)
	assert.Equal(t, []int32{-1, 0, -1, int32(bound - 10), -1},
		grow(t, bounded, 0xFFFFFFF0, bound-10, 11, 10, 1))

	// A declared maximum above the bound is lowered; below it is kept.
	high := growModule(append([]byte{1, 0x70, 0x01, 0x05}, u32(0xFFFFFFFF)...))
	assert.Equal(t, []int32{5, -1}, grow(t, precheck.BoundTables(high), bound-5, 1))
	low := growModule([]byte{1, 0x70, 0x01, 0x00, 0x64})
	assert.Same(t, &low[0], &precheck.BoundTables(low)[0], "a bounded module is not copied")
	assert.Equal(t, []int32{-1, 0}, grow(t, low, 101, 100))

	// Two tables share what their minimum sizes leave.
	two := growModule(append([]byte{2, 0x70, 0x00, 0x00, 0x70, 0x00}, u32(1000)...))
	assert.Equal(t, []int32{0, -1}, grow(t, precheck.BoundTables(two), (bound-1000)/2, 1))
}
