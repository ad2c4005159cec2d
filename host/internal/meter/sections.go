package meter

import (
	"fmt"
	"slices"

	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// order is a section's place in a module: sections other than custom ones
// appear at most once, in this order.
var order = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

type section struct {
	id      byte
	payload []byte
}

// split cuts the module body into sections, checking their order.
func split(b []byte) ([]section, error) {
	var secs []section
	last := 0
	r := wasmbin.Reader{B: b}
	for !r.Done() {
		id := r.Byte()
		n := r.U32()
		payload := r.Bytes(n)
		if r.Err != nil {
			return nil, r.Err
		}
		if id != secCustom {
			o, ok := order[id]
			if !ok {
				return nil, fmt.Errorf("%w: section id %d", ErrUnsupported, id)
			}
			if o <= last {
				return nil, fmt.Errorf("%w: section %d out of order or repeated", ErrMalformed, id)
			}
			last = o
		}
		secs = append(secs, section{id, payload})
	}
	return secs, nil
}

// ensure adds an empty section id at its place when the module has none.
// It goes right after the last section that precedes it, so custom
// sections keep their neighbours (a custom section that ends the module
// still ends it: wazero refuses an empty one there, and must refuse the
// instrumented module too).
func ensure(secs []section, id byte) []section {
	at := 0
	for i, s := range secs {
		if s.id == id {
			return secs
		}
		if s.id != secCustom && order[s.id] < order[id] {
			at = i + 1
		}
	}
	return slices.Insert(secs, at, section{id, []byte{0}})
}

// rewrite returns a section's new payload, or keep false to drop it.
func (m *module) rewrite(s section) (payload []byte, keep bool, err error) {
	switch s.id {
	case secType:
		payload, err = m.rewriteTypes(s.payload)
	case secImport:
		payload, err = m.rewriteImports(s.payload)
	case secGlobal:
		payload, err = m.rewriteGlobals(s.payload)
	case secExport:
		payload, err = m.rewriteExports(s.payload)
	case secStart:
		r := wasmbin.Reader{B: s.payload}
		payload = wasmbin.AppendU32(nil, m.fn(r.U32()))
		err = r.End()
	case secElement:
		payload, err = m.rewriteElements(s.payload)
	case secCode:
		payload, err = m.rewriteCode(s.payload)
	case secData:
		payload = m.mergeData(s.payload)
	case secCustom:
		return m.rewriteCustom(s.payload)
	default:
		payload = s.payload
	}
	return payload, err == nil, err
}
