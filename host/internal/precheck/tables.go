package precheck

import (
	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

// BoundTables returns wasm with the maximum size of each table it defines
// lowered so that all of them together never hold more than
// MaxTableElements references: table.grow past that returns -1 in the
// guest, as the WebAssembly specification lets a host do, instead of making
// wazero allocate. Each table may grow by an equal share of what the
// minimum sizes leave. A module whose tables already keep the bound comes
// back unchanged (the same slice). wasm must have passed Check.
func BoundTables(wasm []byte) []byte {
	r := wasmbin.Reader{B: wasm, Pos: len(header)}
	var imported uint64 // minimum sizes of imported tables
	for !r.Done() && r.Err == nil {
		start := r.Pos
		id := r.Byte()
		payload := r.Bytes(r.U32())
		switch id {
		case secImport:
			imported = importedTableMins(payload)
		case secTable:
			out, changed := boundTableSection(payload, imported)
			if !changed {
				return wasm
			}
			b := append([]byte(nil), wasm[:start]...)
			b = append(b, secTable)
			b = wasmbin.AppendU32(b, uint32(len(out)))
			b = append(b, out...)
			return append(b, wasm[r.Pos:]...)
		}
	}
	return wasm
}

func importedTableMins(b []byte) uint64 {
	r := wasmbin.Reader{B: b}
	var sum uint64
	n := r.U32()
	for i := uint32(0); i < n && r.Err == nil; i++ {
		r.Name()
		r.Name()
		switch r.Byte() {
		case 0x00:
			r.U32()
		case 0x01:
			r.RefType()
			min, _, _ := r.Limits()
			sum += uint64(min)
		case 0x02:
			r.Limits()
		case 0x03:
			r.ValTypes(1)
			r.Byte()
		}
	}
	return sum
}

type table struct {
	ref      byte
	min, max uint32
	hasMax   bool
}

func boundTableSection(b []byte, imported uint64) ([]byte, bool) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	tables := make([]table, 0, n)
	sum := imported
	for i := uint32(0); i < n && r.Err == nil; i++ {
		var t table
		t.ref = r.Byte()
		t.min, t.max, t.hasMax = r.Limits()
		sum += uint64(t.min)
		tables = append(tables, t)
	}
	if r.End() != nil || n == 0 || sum > MaxTableElements {
		return b, false // Check refuses such a module
	}
	share := (MaxTableElements - sum) / uint64(n)
	changed := false
	out := wasmbin.AppendU32(nil, n)
	for _, t := range tables {
		if bound := uint64(t.min) + share; !t.hasMax || uint64(t.max) > bound {
			t.max, t.hasMax, changed = uint32(bound), true, true
		}
		out = append(out, t.ref, 0x01)
		out = wasmbin.AppendU32(out, t.min)
		out = wasmbin.AppendU32(out, t.max)
	}
	return out, changed
}
