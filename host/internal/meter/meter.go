package meter

import (
	"bytes"
	"fmt"

	"github.com/auditproc/auditproc/host/internal/precheck"
	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

const (
	ImportModule = "auditproc_guard"
	ImportName   = "tick"

	// BulkShift: a bulk memory instruction on n bytes costs n>>BulkShift units.
	BulkShift = 16
	// TableShift: a bulk table instruction on n elements costs n>>TableShift
	// units (an element costs more than a byte).
	TableShift = 12
)

// ErrUnsupported reports a module the rewrite cannot instrument exactly.
var ErrUnsupported = wasmbin.ErrUnsupported

// ErrTooComplex reports a module whose control structures would take the
// host too long or too much memory to compile (see MaxNesting). Unlike
// ErrUnsupported it is a refusal whatever guard the plugin runs under.
var ErrTooComplex = fmt.Errorf("%w: too deeply nested to compile within bounds", precheck.ErrRefused)

// ErrMalformed reports a module that is not valid WebAssembly binary format.
var ErrMalformed = wasmbin.ErrMalformed

var header = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Instrument returns a copy of wasm that calls ImportModule.ImportName
// (type () -> ()) every period loop iterations or function entries.
func Instrument(wasm []byte, period uint32) ([]byte, error) {
	if period == 0 || period > 1<<30 {
		return nil, fmt.Errorf("meter: period %d out of range", period)
	}
	if !bytes.HasPrefix(wasm, header) {
		return nil, fmt.Errorf("%w: no WebAssembly version 1 header", ErrMalformed)
	}
	secs, err := split(wasm[len(header):])
	if err != nil {
		return nil, err
	}
	m := &module{period: period}
	for _, id := range []byte{secType, secImport, secGlobal} {
		secs = ensure(secs, id)
	}
	// Read what renumbering needs before rewriting anything.
	for _, s := range secs {
		var err error
		switch s.id {
		case secType:
			err = m.readTypes(s.payload)
		case secImport:
			err = m.readImports(s.payload)
		case secFunction:
			err = m.readFunctions(s.payload)
		case secGlobal:
			// Every global of the module as written: the counter comes
			// after them, and no instruction may name it.
			r := wasmbin.Reader{B: s.payload}
			m.counter = m.globals + r.U32()
			err = r.Err
		case secDataCount:
			m.dataIndexed = true
		}
		if err != nil {
			return nil, err
		}
	}
	// A module without a name section gets one (see rewriteCustom) after
	// its last standard section, where custom sections already stand.
	hasNames, last := false, 0
	for i, s := range secs {
		if s.id != secCustom {
			last = i
		} else if isNameSection(s.payload) {
			hasNames = true
		}
	}
	out := append([]byte(nil), header...)
	for i, s := range secs {
		payload, keep, err := m.rewrite(s)
		if err != nil {
			return nil, err
		}
		if keep {
			out = append(out, s.id)
			out = wasmbin.AppendU32(out, uint32(len(payload)))
			out = append(out, payload...)
		}
		if i == last && !hasNames {
			names := m.nameSection()
			out = append(out, secCustom)
			out = wasmbin.AppendU32(out, uint32(len(names)))
			out = append(out, names...)
		}
	}
	return out, nil
}

// module is what the rewrite knows of the module being instrumented.
type module struct {
	period   uint32
	params   []uint32 // parameter count of each type
	tickType uint32   // index of the type () -> ()
	addType  bool     // the type section lacks () -> () and gets it
	funcImps uint32   // function imports before the new one
	globals  uint32   // globals, imported and defined, before the new one
	funcs    []uint32 // type of each defined function
	counter  uint32   // index of the new global
	tick     uint32   // function index of the new import
	// dataIndexed: the module names data segments by index (a data count
	// section, memory.init or data.drop), so they are not merged.
	dataIndexed bool
	work        uint64 // see MaxWork
}
