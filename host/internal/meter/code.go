package meter

import (
	"fmt"

	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

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
// and the charges of bulk instructions and memory.grow, and renumbers
// function indices. It adds one i32 local that holds the count of a bulk
// instruction.
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
	out = append(wasmbin.AppendU32(out, 1), typeI32)
	out = m.meter(out)
	out, err := m.instructions(&r, out, scratch, false)
	if err != nil {
		return nil, err
	}
	return out, r.End()
}

// meter appends: counter -= 1, then check.
func (m *module) meter(out []byte) []byte {
	out = wasmbin.AppendU32(append(out, opGlobalGet), m.counter)
	out = append(out, opI32Const, 1, opI32Sub)
	out = wasmbin.AppendU32(append(out, opGlobalSet), m.counter)
	return m.check(out)
}

// check appends: if counter < 0 { tick(); counter = period }.
func (m *module) check(out []byte) []byte {
	out = wasmbin.AppendU32(append(out, opGlobalGet), m.counter)
	out = append(out, opI32Const, 0, opI32LtS, opIf, blockEmpty)
	out = wasmbin.AppendU32(append(out, opCall), m.tick)
	out = wasmbin.AppendS32(append(out, opI32Const), int32(m.period))
	out = wasmbin.AppendU32(append(out, opGlobalSet), m.counter)
	return append(out, opEnd)
}

// charge appends, before a bulk instruction whose count n is on top of the
// stack: scratch = n; counter -= n >> shift; check; n back on the stack. The
// check comes before the instruction runs, so straight-line code of large
// fills stops at its deadline as a loop of them does.
func (m *module) charge(out []byte, scratch uint32, shift byte) []byte {
	out = wasmbin.AppendU32(append(out, opLocalSet), scratch)
	out = wasmbin.AppendU32(append(out, opGlobalGet), m.counter)
	out = wasmbin.AppendU32(append(out, opLocalGet), scratch)
	out = append(out, opI32Const, shift, opI32ShrU, opI32Sub)
	out = wasmbin.AppendU32(append(out, opGlobalSet), m.counter)
	out = m.check(out)
	return wasmbin.AppendU32(append(out, opLocalGet), scratch)
}

// chargeGrow appends, before memory.grow on memory mem: counter -= 1 +
// memory.size; check. Growing may copy the whole memory, one unit per
// 64 KiB page as bulk instructions are charged, so a loop growing one page
// at a time pays for its copies.
func (m *module) chargeGrow(out []byte, mem uint32) []byte {
	out = wasmbin.AppendU32(append(out, opGlobalGet), m.counter)
	out = wasmbin.AppendU32(append(out, opMemorySize), mem)
	out = append(out, opI32Const, 1, opI32Add, opI32Sub)
	out = wasmbin.AppendU32(append(out, opGlobalSet), m.counter)
	return m.check(out)
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

// invalid reports an index the module as written may not use. The rewrite
// adds a function import, a type, a global and a local: an index naming one
// of them is invalid in the module as written and must stay so, or guest
// code could reach the counter (a module that sets it never meets its
// deadline) or the scratch local.
func invalid(what string, idx, limit uint32) error {
	return fmt.Errorf("%w: %s index %d out of range (the module has %d)", ErrMalformed, what, idx, limit)
}

// blockType checks a block type: a value type, empty, or a type index.
func (m *module) blockType(r *wasmbin.Reader) error {
	if t := r.S64(); t >= 0 && t >= int64(len(m.params)) {
		return invalid("block type", uint32(min(t, 1<<32-1)), uint32(len(m.params)))
	}
	return nil
}

// instructions copies instructions from r to out: a whole function body
// whose own locals are the first scratch ones, or with constant set, one
// constant expression up to its end. Outside constant expressions it meters
// loops and charges bulk instructions and memory.grow.
func (m *module) instructions(r *wasmbin.Reader, out []byte, scratch uint32, constant bool) ([]byte, error) {
	var nest nesting
	for !r.Done() && r.Err == nil {
		at := r.Pos
		op := r.Byte()
		var err error
		switch {
		case op == opEnd:
			out = append(out, op)
			if constant {
				return out, r.Err
			}
			nest.close()
			continue
		case op == opBlock || op == opIf:
			if err = m.blockType(r); err == nil {
				err = nest.open(&m.work, false)
			}
		case op == opLoop:
			if err = m.blockType(r); err == nil {
				err = nest.open(&m.work, true)
			}
			if err == nil && !constant {
				out = m.meter(append(out, r.B[at:r.Pos]...))
				continue
			}
		case op == opCall || op == opReturnCall || op == opRefFunc:
			out = wasmbin.AppendU32(append(out, op), m.fn(r.U32()))
			continue
		case op == opBrTable:
			n := r.U32()
			for i := uint32(0); i <= n && r.Err == nil; i++ {
				r.U32()
			}
		case op == opCallIndirect || op == opReturnCallIndirect:
			if typ := r.U32(); typ >= uint32(len(m.params)) && r.Err == nil {
				err = invalid("type", typ, uint32(len(m.params)))
			}
			r.U32()
		case op == opSelectTyped:
			r.ValTypes(r.U32())
		case op == opLocalGet || op == opLocalSet || op == opLocalTee:
			if idx := r.U32(); (constant || idx >= scratch) && r.Err == nil {
				err = invalid("local", idx, scratch)
			}
		case op == opGlobalGet || op == opGlobalSet:
			if idx := r.U32(); idx >= m.counter && r.Err == nil {
				err = invalid("global", idx, m.counter)
			}
		case op == opMemoryGrow:
			mem := r.U32()
			if !constant {
				out = m.chargeGrow(out, mem)
			}
		case op == opBr || op == opBrIf || op == opTableGet || op == opTableSet || op == opMemorySize:
			r.U32()
		case op >= opFirstLoad && op <= opLastStore:
			r.MemArg()
		case op == opI32Const || op == opI64Const || op == opRefNull:
			r.S64()
		case op == opF32Const:
			r.Bytes(4)
		case op == opF64Const:
			r.Bytes(8)
		case op == opUnreachable || op == opNop || op == opElse || op == opReturn || op == opDrop ||
			op == opSelect || (op >= opFirstNumeric && op <= opLastNumeric) || op == opRefIsNull:
		case op == opPrefixMisc:
			out, err = m.misc(r, out, scratch, constant)
		case op == opPrefixSIMD:
			err = simd(r)
		default:
			err = fmt.Errorf("%w: instruction 0x%02x at byte %d", ErrUnsupported, op, at)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.B[at:r.Pos]...)
	}
	if constant && r.Err == nil {
		return nil, fmt.Errorf("%w: constant expression without end", ErrMalformed)
	}
	return out, r.Err
}

// Limits on the shape of control structures. wazero's compile time grows
// with the square of the nesting depth, and steeply so for metered loops
// (20,000 nested loops did not compile in 100 s; 6,000 nested blocks take
// 0.4 s). The standard-Go examples nest at most 549 blocks and 1 loop, the
// C ones 23 and 4. Work sums, over every block, loop and if of the module,
// its depth (a loop's ten times): it bounds the whole module's compile time
// to a few seconds; the examples need at most 2.6 million.
const (
	MaxNesting     = 4096
	MaxLoopNesting = 64
	MaxWork        = 50_000_000
)

// nesting follows the control structures open in one function body.
type nesting struct {
	loops []bool // per open structure: whether it is a loop
	inner int    // loops among them
}

func (n *nesting) open(work *uint64, loop bool) error {
	n.loops = append(n.loops, loop)
	weight := uint64(len(n.loops))
	if loop {
		n.inner++
		weight *= 10
	}
	*work += weight
	switch {
	case len(n.loops) > MaxNesting:
		return fmt.Errorf("%w: control structures nested %d deep, the limit is %d", ErrTooComplex, len(n.loops), MaxNesting)
	case n.inner > MaxLoopNesting:
		return fmt.Errorf("%w: loops nested %d deep, the limit is %d", ErrTooComplex, n.inner, MaxLoopNesting)
	case *work > MaxWork:
		return fmt.Errorf("%w: the control structures' nesting weighs more than %d", ErrTooComplex, MaxWork)
	}
	return nil
}

// close ends the innermost structure (the function's own end has none).
func (n *nesting) close() {
	if len(n.loops) == 0 {
		return
	}
	if n.loops[len(n.loops)-1] {
		n.inner--
	}
	n.loops = n.loops[:len(n.loops)-1]
}

// misc reads the rest of an opPrefixMisc instruction and appends the charge
// of a bulk one (the instruction itself is copied by the caller).
func (m *module) misc(r *wasmbin.Reader, out []byte, scratch uint32, constant bool) ([]byte, error) {
	sub := r.U32()
	switch {
	case sub <= miscLastTruncSat:
	case sub == miscMemoryInit || sub == miscMemoryCopy || sub == miscTableInit || sub == miscTableCopy:
		r.U32()
		r.U32()
	case sub == miscMemoryFill || sub == miscDataDrop || sub == miscElemDrop ||
		sub == miscTableGrow || sub == miscTableSize || sub == miscTableFill:
		r.U32()
	default:
		return nil, fmt.Errorf("%w: instruction 0xFC %d", ErrUnsupported, sub)
	}
	if sub == miscMemoryInit || sub == miscDataDrop {
		m.dataIndexed = true
	}
	switch {
	case constant:
	case sub == miscMemoryInit || sub == miscMemoryCopy || sub == miscMemoryFill:
		out = m.charge(out, scratch, BulkShift)
	case sub == miscTableInit || sub == miscTableCopy || sub == miscTableFill:
		out = m.charge(out, scratch, TableShift)
	}
	return out, nil
}

// simd reads the immediates of an opPrefixSIMD instruction.
func simd(r *wasmbin.Reader) error {
	switch sub := r.U32(); {
	case sub <= simdLastStore || sub == simdLoad32Zero || sub == simdLoad64Zero:
		r.MemArg()
	case sub == simdV128Const || sub == simdI8x16Shuffle:
		r.Bytes(16)
	case sub >= simdFirstLane && sub <= simdLastLane:
		r.Byte()
	case sub >= simdFirstLaneMem && sub <= simdLastLaneMem:
		r.MemArg()
		r.Byte()
	case sub > simdLastInstuction:
		return fmt.Errorf("%w: instruction 0xFD %d", ErrUnsupported, sub)
	}
	return nil
}
