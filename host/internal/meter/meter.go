// Package meter rewrites a WebAssembly module so that the host can stop it
// at a deadline without the cost of wazero's own guard.
//
// wazero's guard (RuntimeConfig.WithCloseOnContextDone) leaves native code
// for Go at every loop iteration and starts a goroutine per call, which makes
// loop-heavy plugins ten times slower. Instrument instead gives the module a
// counter (a mutable i32 global of its own) that every loop iteration and
// every function entry decrements; when it runs out, the module calls the
// host function ImportModule.ImportName, which checks the running call's
// deadline and traps the guest when it is past, and the counter starts again
// from the period. Bulk memory instructions (memory.fill, memory.copy,
// memory.init) take one unit per 64 KiB they touch and bulk table
// instructions (table.fill, table.copy, table.init) one per 4,096 elements,
// so a loop of large fills is stopped as promptly as a loop of small steps.
//
// Function entries are metered too, so a guest recursing without loops (which
// wazero's guard does not see) is stopped at its deadline as well.
//
// The rewrite keeps the module's behaviour: the new import comes after the
// module's own function imports, so every later function index moves up by
// one, and the rewrite renumbers calls, ref.func, exports, the start
// function, element segments and the function and local names of the "name"
// section. Sections it cannot keep exact (DWARF, other name subsections) are
// dropped. A module using an instruction the rewrite does not know is
// refused with ErrUnsupported, and the host falls back to wazero's guard.
package meter

import (
	"bytes"
	"fmt"
	"slices"

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

// ErrMalformed reports a module that is not valid WebAssembly binary format.
var ErrMalformed = wasmbin.ErrMalformed

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

var header = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

type section struct {
	id      byte
	payload []byte
}

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
		case secDataCount:
			m.dataIndexed = true
		}
		if err != nil {
			return nil, err
		}
	}
	out := append([]byte(nil), header...)
	for _, s := range secs {
		payload, keep, err := m.rewrite(s)
		if err != nil {
			return nil, err
		}
		if keep {
			out = append(out, s.id)
			out = wasmbin.AppendU32(out, uint32(len(payload)))
			out = append(out, payload...)
		}
	}
	return out, nil
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
func ensure(secs []section, id byte) []section {
	at := len(secs)
	for i, s := range secs {
		if s.id == id {
			return secs
		}
		if s.id != secCustom && order[s.id] > order[id] && at == len(secs) {
			at = i
		}
	}
	return slices.Insert(secs, at, section{id, []byte{0}})
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
}

func (m *module) readTypes(b []byte) error {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	found := false
	for i := uint32(0); i < n && r.Err == nil; i++ {
		if form := r.Byte(); form != 0x60 {
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
			r.U32()
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

func (m *module) rewriteTypes(b []byte) ([]byte, error) {
	if !m.addType {
		return b, nil
	}
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n+1)
	out = append(out, b[r.Pos:]...)
	return append(out, 0x60, 0x00, 0x00), r.Err
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
	m.counter = m.globals + n
	out = append(out, 0x7F, 0x01, 0x41) // mut i32 = i32.const period
	out = wasmbin.AppendS32(out, int32(m.period))
	return append(out, 0x0B), r.End()
}

func (m *module) rewriteExports(b []byte) ([]byte, error) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	out := wasmbin.AppendU32(nil, n)
	for i := uint32(0); i < n && r.Err == nil; i++ {
		out = wasmbin.AppendName(out, r.Name())
		kind := r.Byte()
		idx := r.U32()
		if kind == 0x00 {
			idx = m.fn(idx)
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

func (m *module) rewriteCode(b []byte) ([]byte, error) {
	r := wasmbin.Reader{B: b}
	n := r.U32()
	if int(n) != len(m.funcs) {
		return nil, fmt.Errorf("%w: %d function bodies for %d functions", ErrMalformed, n, len(m.funcs))
	}
	out := wasmbin.AppendU32(nil, n)
	var body []byte
	for i := uint32(0); i < n && r.Err == nil; i++ {
		size := r.U32()
		code := r.Bytes(size)
		if r.Err != nil {
			break
		}
		var err error
		body, err = m.rewriteBody(code, m.funcs[i], body[:0])
		if err != nil {
			return nil, fmt.Errorf("function %d (code section entry %d): %w", m.funcImps+i, i, err)
		}
		out = wasmbin.AppendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	return out, r.End()
}

// rewriteBody adds the function-entry meter, a meter at every loop header
// and the bulk-memory charge, and renumbers function indices. It adds one
// i32 local that holds the byte count of a bulk instruction.
func (m *module) rewriteBody(code []byte, typ uint32, out []byte) ([]byte, error) {
	if typ >= uint32(len(m.params)) {
		return nil, fmt.Errorf("%w: type index %d out of range", ErrMalformed, typ)
	}
	r := wasmbin.Reader{B: code}
	groups := r.U32()
	locals := uint64(m.params[typ])
	out = wasmbin.AppendU32(out, groups+1)
	for g := uint32(0); g < groups && r.Err == nil; g++ {
		count := r.U32()
		locals += uint64(count)
		out = wasmbin.AppendU32(out, count)
		start := r.Pos
		r.ValTypes(1)
		out = append(out, code[start:r.Pos]...)
	}
	if locals >= 50000 {
		return nil, fmt.Errorf("%w: %d locals", ErrUnsupported, locals)
	}
	scratch := uint32(locals)
	out = append(wasmbin.AppendU32(out, 1), 0x7F)
	out = m.meter(out)
	out, err := m.instructions(&r, out, scratch, false)
	if err != nil {
		return nil, err
	}
	return out, r.End()
}

// meter appends: counter -= 1; if counter < 0 { tick(); counter = period }.
func (m *module) meter(out []byte) []byte {
	out = wasmbin.AppendU32(append(out, 0x23), m.counter) // global.get
	out = append(out, 0x41, 0x01, 0x6B)                   // i32.const 1, i32.sub
	out = wasmbin.AppendU32(append(out, 0x24), m.counter) // global.set
	out = wasmbin.AppendU32(append(out, 0x23), m.counter) // global.get
	out = append(out, 0x41, 0x00, 0x48, 0x04, 0x40)       // i32.const 0, i32.lt_s, if
	out = wasmbin.AppendU32(append(out, 0x10), m.tick)    // call tick
	out = append(out, 0x41)                               // i32.const period
	out = wasmbin.AppendS32(out, int32(m.period))
	out = wasmbin.AppendU32(append(out, 0x24), m.counter) // global.set
	return append(out, 0x0B)                              // end
}

// charge appends, before a bulk instruction whose count n is on top of the
// stack: scratch = n; counter -= n >> shift; n back on the stack.
func (m *module) charge(out []byte, scratch uint32, shift byte) []byte {
	out = wasmbin.AppendU32(append(out, 0x21), scratch)   // local.set
	out = wasmbin.AppendU32(append(out, 0x23), m.counter) // global.get
	out = wasmbin.AppendU32(append(out, 0x20), scratch)   // local.get
	out = append(out, 0x41, shift, 0x76, 0x6B)            // i32.const shift, i32.shr_u, i32.sub
	out = wasmbin.AppendU32(append(out, 0x24), m.counter) // global.set
	return wasmbin.AppendU32(append(out, 0x20), scratch)  // local.get
}

// constExpr copies a constant expression (up to and with its end),
// renumbering ref.func.
func (m *module) constExpr(r *wasmbin.Reader, out []byte) []byte {
	out, err := m.instructions(r, out, 0, true)
	if err != nil && r.Err == nil {
		r.Err = err
	}
	return out
}

// instructions copies instructions from r to out: a whole function body, or
// with constant set, one constant expression up to its end. Outside constant
// expressions it meters loops and charges bulk memory instructions.
func (m *module) instructions(r *wasmbin.Reader, out []byte, scratch uint32, constant bool) ([]byte, error) {
	for !r.Done() && r.Err == nil {
		at := r.Pos
		op := r.Byte()
		switch {
		case op == 0x0B: // end
			out = append(out, op)
			if constant {
				return out, r.Err
			}
		case op == 0x02 || op == 0x04: // block, if
			r.S64()
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x03: // loop
			r.S64()
			out = append(out, r.B[at:r.Pos]...)
			if !constant {
				out = m.meter(out)
			}
		case op == 0x10 || op == 0x12 || op == 0xD2: // call, return_call, ref.func
			out = wasmbin.AppendU32(append(out, op), m.fn(r.U32()))
		case op == 0x0E: // br_table
			n := r.U32()
			for i := uint32(0); i <= n && r.Err == nil; i++ {
				r.U32()
			}
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
			r.U32()
			r.U32()
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x1C: // select t*
			r.ValTypes(r.U32())
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x0C || op == 0x0D || (op >= 0x20 && op <= 0x26) || op == 0x3F || op == 0x40:
			// br, br_if, local.*, global.*, table.get/set, memory.size/grow
			r.U32()
			out = append(out, r.B[at:r.Pos]...)
		case op >= 0x28 && op <= 0x3E: // loads and stores
			r.MemArg()
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x41 || op == 0x42: // i32.const, i64.const
			r.S64()
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x43:
			r.Bytes(4)
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x44:
			r.Bytes(8)
			out = append(out, r.B[at:r.Pos]...)
		case op == 0xD0: // ref.null
			r.S64()
			out = append(out, r.B[at:r.Pos]...)
		case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0F || op == 0x1A || op == 0x1B ||
			(op >= 0x45 && op <= 0xC4) || op == 0xD1:
			out = append(out, op)
		case op == 0xFC:
			sub := r.U32()
			switch {
			case sub <= 7: // saturating truncations
			case sub == 8: // memory.init data mem
				r.U32()
				r.U32()
			case sub == 10: // memory.copy mem mem
				r.U32()
				r.U32()
			case sub == 11: // memory.fill mem
				r.U32()
			case sub == 9 || sub == 13 || (sub >= 15 && sub <= 17): // data.drop, elem.drop, table.grow/size/fill
				r.U32()
			case sub == 12 || sub == 14: // table.init, table.copy
				r.U32()
				r.U32()
			default:
				return nil, fmt.Errorf("%w: instruction 0xFC %d", ErrUnsupported, sub)
			}
			if sub == 8 || sub == 9 {
				m.dataIndexed = true
			}
			switch {
			case constant:
			case sub == 8 || sub == 10 || sub == 11: // memory.init, memory.copy, memory.fill
				out = m.charge(out, scratch, BulkShift)
			case sub == 12 || sub == 14 || sub == 17: // table.init, table.copy, table.fill
				out = m.charge(out, scratch, TableShift)
			}
			out = append(out, r.B[at:r.Pos]...)
		case op == 0xFD:
			sub := r.U32()
			switch {
			case sub <= 11 || sub == 92 || sub == 93: // loads and stores
				r.MemArg()
			case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
				r.Bytes(16)
			case sub >= 21 && sub <= 34: // lane extract and replace
				r.Byte()
			case sub >= 84 && sub <= 91: // lane loads and stores
				r.MemArg()
				r.Byte()
			case sub > 0x113:
				return nil, fmt.Errorf("%w: instruction 0xFD %d", ErrUnsupported, sub)
			}
			out = append(out, r.B[at:r.Pos]...)
		default:
			return nil, fmt.Errorf("%w: instruction 0x%02x at byte %d", ErrUnsupported, op, at)
		}
	}
	if constant && r.Err == nil {
		return nil, fmt.Errorf("%w: constant expression without end", ErrMalformed)
	}
	return out, r.Err
}

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
		if r.U32() != 0 || r.Byte() != 0x41 { // active, memory 0, i32.const
			return b
		}
		at := uint64(uint32(r.S32()))
		if r.Byte() != 0x0B {
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
		out = append(out, 0x00, 0x41)
		out = wasmbin.AppendS32(out, int32(uint32(s.at)))
		out = append(out, 0x0B)
		out = wasmbin.AppendU32(out, uint32(len(s.data)))
		out = append(out, s.data...)
	}
	return out
}

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
