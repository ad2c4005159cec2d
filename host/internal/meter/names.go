package meter

import (
	"strconv"

	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

// rewriteCustom keeps custom sections, renumbers the "name" section's
// function and local names and drops what would no longer be exact. A
// defined function without a name is given "$" and its index in the module
// as written, so a trap's stack trace names the module's own index (wazero
// writes $index, by the instrumented numbering, for an unnamed function).
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
	funcNames := false
	for !r.Done() && r.Err == nil {
		id := r.Byte()
		sub := wasmbin.Reader{B: r.Bytes(r.U32())}
		if id > 1 && !funcNames {
			out = m.appendFuncNames(out, nil)
			funcNames = true
		}
		var content []byte
		switch id {
		case 0: // module name
			content = sub.B
		case 1: // function names
			if funcNames {
				continue
			}
			out = m.appendFuncNames(out, &sub)
			funcNames = true
			continue
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
	if !funcNames {
		out = m.appendFuncNames(out, nil)
	}
	return out, true, nil
}

// nameSection is a name section for a module that has none: the names
// appendFuncNames gives.
func (m *module) nameSection() []byte {
	return m.appendFuncNames(wasmbin.AppendName(nil, "name"), nil)
}

// isNameSection reports whether a custom section's payload is the "name"
// section's.
func isNameSection(payload []byte) bool {
	r := wasmbin.Reader{B: payload}
	return r.Name() == "name" && r.Err == nil
}

// appendFuncNames appends the function names subsection: the names of sub
// (a function names subsection of the module as written, or nil),
// renumbered, with "$index" for each defined function it does not name.
// A malformed sub loses its names, not the module.
func (m *module) appendFuncNames(out []byte, sub *wasmbin.Reader) []byte {
	var content []byte
	count := uint32(0)
	next := m.funcImps // the next defined function to name
	fill := func(upTo uint32) {
		for ; next < upTo; next++ {
			content = wasmbin.AppendU32(content, m.fn(next))
			content = wasmbin.AppendName(content, "$"+strconv.FormatUint(uint64(next), 10))
			count++
		}
	}
	defined := m.funcImps + uint32(len(m.funcs))
	if sub != nil {
		n := sub.U32()
		last := int64(-1)
		for i := uint32(0); i < n && sub.Err == nil; i++ {
			idx, name := sub.U32(), sub.Name()
			if sub.Err != nil || int64(idx) <= last || idx >= defined {
				break // out of order or out of range: stop here
			}
			last = int64(idx)
			fill(idx)
			content = wasmbin.AppendU32(content, m.fn(idx))
			content = wasmbin.AppendName(content, name)
			count++
			next = max(next, idx+1)
		}
	}
	fill(defined)
	out = append(out, 1)
	body := wasmbin.AppendU32(nil, count)
	out = wasmbin.AppendU32(out, uint32(len(body)+len(content)))
	out = append(out, body...)
	return append(out, content...)
}
