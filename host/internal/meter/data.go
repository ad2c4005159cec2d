package meter

import "github.com/auditproc/auditproc/host/internal/wasmbin"

// maxDataGap is the longest run of zeros mergeData writes to join two
// data segments.
const maxDataGap = 1024

// mergeData joins consecutive active data segments that are at most
// maxDataGap bytes apart in memory into one segment, the gap filled with
// zeros. Instantiation writes the same bytes: memory starts zeroed, a later
// segment still overwrites an earlier one, and a gap is filled only when no
// earlier segment wrote into it. A standard-Go module has 20,000-30,000
// segments a few dozen bytes apart; wazero keeps each as objects of its own
// for the module's life and copies them one by one into every instance.
// Modules laid out otherwise keep their segments.
func (m *module) mergeData(b []byte) []byte {
	if m.dataIndexed {
		return b
	}
	type segment struct {
		at   uint64
		data []byte
	}
	end := func(s segment) uint64 { return s.at + uint64(len(s.data)) }
	r := wasmbin.Reader{B: b}
	n := r.U32()
	var merged []segment
	for i := uint32(0); i < n && r.Err == nil; i++ {
		if r.U32() != 0 || r.Byte() != opI32Const { // active, memory 0, i32.const
			return b
		}
		at := uint64(uint32(r.S32()))
		if r.Byte() != opEnd {
			return b
		}
		data := r.Bytes(r.U32())
		if k := len(merged) - 1; k >= 0 && at >= end(merged[k]) && at-end(merged[k]) <= maxDataGap {
			from := end(merged[k])
			free := true
			for _, e := range merged[:k] {
				free = free && (end(e) <= from || e.at >= at)
			}
			if free {
				merged[k].data = append(merged[k].data, make([]byte, at-from)...)
				merged[k].data = append(merged[k].data, data...)
				continue
			}
		}
		if len(merged) == 4096 {
			return b // not a layout that merges well
		}
		merged = append(merged, segment{at, append([]byte(nil), data...)})
	}
	if r.End() != nil {
		return b
	}
	out := wasmbin.AppendU32(nil, uint32(len(merged)))
	for _, s := range merged {
		out = append(out, 0x00, opI32Const) // active, memory 0
		out = wasmbin.AppendS32(out, int32(uint32(s.at)))
		out = append(out, opEnd)
		out = wasmbin.AppendU32(out, uint32(len(s.data)))
		out = append(out, s.data...)
	}
	return out
}
