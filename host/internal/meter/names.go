package meter

import "github.com/auditproc/auditproc/host/internal/wasmbin"

// rewriteCustom keeps custom sections, renumbers the "name" section's
// function and local names and drops what would no longer be exact.
func (m *module) rewriteCustom(b []byte) ([]byte, bool, error) {
	r := wasmbin.Reader{B: b}
	name := r.Name()
	if r.Err != nil {
		return nil, false, r.Err
	}
	if len(name) > 7 && name[:7] == ".debug_" {
		return nil, false, nil // DWARF addresses code offsets, which moved
	}
	if name != "name" {
		return b, true, nil
	}
	out := wasmbin.AppendName(nil, name)
	for !r.Done() && r.Err == nil {
		id := r.Byte()
		sub := wasmbin.Reader{B: r.Bytes(r.U32())}
		var content []byte
		switch id {
		case 0: // module name
			content = sub.B
		case 1: // function names
			n := sub.U32()
			content = wasmbin.AppendU32(nil, n)
			for i := uint32(0); i < n && sub.Err == nil; i++ {
				content = wasmbin.AppendU32(content, m.fn(sub.U32()))
				content = wasmbin.AppendName(content, sub.Name())
			}
		case 2: // local names, by function
			n := sub.U32()
			content = wasmbin.AppendU32(nil, n)
			for i := uint32(0); i < n && sub.Err == nil; i++ {
				content = wasmbin.AppendU32(content, m.fn(sub.U32()))
				start := sub.Pos
				locals := sub.U32()
				for j := uint32(0); j < locals && sub.Err == nil; j++ {
					sub.U32()
					sub.Name()
				}
				content = append(content, sub.B[start:sub.Pos]...)
			}
		default:
			continue // label, type and other names: dropped
		}
		if err := sub.End(); err != nil {
			// A name section is only a debugging aid: drop it rather
			// than refuse the module.
			return nil, false, nil
		}
		out = append(out, id)
		out = wasmbin.AppendU32(out, uint32(len(content)))
		out = append(out, content...)
	}
	if r.Err != nil {
		return nil, false, nil
	}
	return out, true, nil
}
