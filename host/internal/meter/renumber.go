package meter

import (
	"fmt"

	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

func (m *module) readTypes(b []byte) error {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	found := false
	for i := uint32(0); i < n && r.Err == nil; i++ {
		if form := r.Byte(); form != typeFunc {
			return fmt.Errorf("%w: type %d has form 0x%02x", ErrUnsupported, i, form)
		}
		np := r.U32()
		r.ValTypes(np)
		nr := r.U32()
		r.ValTypes(nr)
		m.params = append(m.params, np)
		if np == 0 && nr == 0 && !found {
			found, m.tickType = true, i
		}
	}
	if err := r.End(); err != nil {
		return err
	}
	if !found {
		m.addType, m.tickType = true, n
	}
	return nil
}

func (m *module) readImports(b []byte) error {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	for i := uint32(0); i < n && r.Err == nil; i++ {
		mod := r.Name()
		r.Name()
		if mod == ImportModule {
			return fmt.Errorf("%w: the module already imports from %q", ErrUnsupported, ImportModule)
		}
		switch kind := r.Byte(); kind {
		case 0x00:
			if typ := r.U32(); typ >= uint32(len(m.params)) && r.Err == nil {
				return invalid("type", typ, uint32(len(m.params)))
			}
			m.funcImps++
		case 0x01:
			r.RefType()
			r.Limits()
		case 0x02:
			r.Limits()
		case 0x03:
			r.ValTypes(1)
			r.Byte()
			m.globals++
		default:
			return fmt.Errorf("%w: import kind 0x%02x", ErrUnsupported, kind)
		}
	}
	m.tick = m.funcImps
	return r.End()
}

func (m *module) readFunctions(b []byte) error {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	for i := uint32(0); i < n && r.Err == nil; i++ {
		m.funcs = append(m.funcs, r.U32())
	}
	return r.End()
}

// fn renumbers a function index for the new import.
func (m *module) fn(i uint32) uint32 {
	if i >= m.tick {
		return i + 1
	}
	return i
}

func (m *module) rewriteTypes(b []byte) ([]byte, error) {
	if !m.addType {
		return b, nil
	}
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n+1)
	out = append(out, b[r.Pos:]...)
	return append(out, typeFunc, 0x00, 0x00), r.Err
}

func (m *module) rewriteImports(b []byte) ([]byte, error) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n+1)
	out = append(out, b[r.Pos:]...)
	out = wasmbin.AppendName(out, ImportModule)
	out = wasmbin.AppendName(out, ImportName)
	out = append(out, 0x00)
	return wasmbin.AppendU32(out, m.tickType), r.Err
}

func (m *module) rewriteGlobals(b []byte) ([]byte, error) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n+1)
	for i := uint32(0); i < n && r.Err == nil; i++ {
		start := r.Pos
		r.ValTypes(1)
		r.Byte()
		out = append(out, b[start:r.Pos]...)
		out = m.constExpr(&r, out)
	}
	out = append(out, typeI32, 0x01, opI32Const) // mut i32 = i32.const period
	out = wasmbin.AppendS32(out, int32(m.period))
	return append(out, opEnd), r.End()
}

func (m *module) rewriteExports(b []byte) ([]byte, error) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n)
	for i := uint32(0); i < n && r.Err == nil; i++ {
		out = wasmbin.AppendName(out, r.Name())
		kind := r.Byte()
		idx := r.U32()
		switch {
		case kind == 0x00:
			idx = m.fn(idx)
		case kind == 0x03 && idx >= m.counter && r.Err == nil:
			return nil, invalid("exported global", idx, m.counter)
		}
		out = wasmbin.AppendU32(append(out, kind), idx)
	}
	return out, r.End()
}

func (m *module) rewriteElements(b []byte) ([]byte, error) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n)
	for i := uint32(0); i < n && r.Err == nil; i++ {
		flags := r.U32()
		if flags > 7 {
			return nil, fmt.Errorf("%w: element segment %d has flags %d", ErrUnsupported, i, flags)
		}
		out = wasmbin.AppendU32(out, flags)
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			out = wasmbin.AppendU32(out, r.U32())
		}
		if flags&1 == 0 { // active: offset expression
			out = m.constExpr(&r, out)
		}
		if flags&3 != 0 { // elemkind or reftype
			out = append(out, r.Byte())
		}
		count := r.U32()
		out = wasmbin.AppendU32(out, count)
		for j := uint32(0); j < count && r.Err == nil; j++ {
			if flags&4 != 0 {
				out = m.constExpr(&r, out)
			} else {
				out = wasmbin.AppendU32(out, m.fn(r.U32()))
			}
		}
	}
	return out, r.End()
}
