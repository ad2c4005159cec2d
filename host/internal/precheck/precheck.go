// Package precheck bounds a WebAssembly module before wazero decodes it.
//
// wazero sizes what it allocates by the counts a module declares: a
// function whose one local group counts 0xFFFFFFFF locals makes its
// decoder allocate 4 GiB, a vector count of 0xFFFFFFFF in any section sizes
// a slice of four billion entries, and a table's declared minimum becomes a
// slice of that many references in every instance. Check walks the module's
// structure (sections, vectors, types, imports, tables, globals, element and
// data segments, the local declarations of every function body and the name
// section) and refuses, with an error naming what and the limit, any module
// that declares more than the limits below or a count larger than the bytes
// left to hold it. It does not validate instructions: wazero does that, on
// a module already known to be small in every dimension that costs memory.
//
// BoundTables then caps the tables' maximum sizes so that table.grow fails
// inside the guest (returns -1) before an instance's tables hold more than
// MaxTableElements references in all.
//
// The limits follow the implementation limits of the WebAssembly JS API
// (https://webassembly.github.io/spec/js-api/#limits), which every browser
// engine enforces, so a module built by a standard toolchain keeps them;
// tables and globals, which cost host memory in every instance, are bounded
// more tightly.
package precheck

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/auditproc/auditproc/host/internal/wasmbin"
)

// The limits a module must keep.
const (
	MaxModuleBytes     = 64 << 20  // the module's size
	MaxTypes           = 1_000_000 // types in the type section
	MaxParams          = 1_000     // parameters of one function type
	MaxResults         = 1_000     // results of one function type
	MaxImports         = 100_000   // imports
	MaxFunctions       = 1_000_000 // functions, imported and defined
	MaxTables          = 100       // tables, imported and defined
	MaxGlobals         = 100_000   // globals, imported and defined
	MaxExports         = 100_000   // exports
	MaxElementSegments = 100_000   // element segments
	MaxDataSegments    = 100_000   // data segments
	MaxLocals          = 49_999    // parameters and locals of one function (the meter adds one)
	// Compiling takes some 340 bytes of host memory per byte of the
	// function being compiled and time in proportion to the whole code: a
	// 512 KiB body compiles in under 200 MiB (the largest function of the
	// standard-Go examples is 29 KB), 16 MiB of code in about a minute.
	MaxFunctionBytes    = 512 << 10 // the code of one function body
	MaxCodeBytes        = 16 << 20  // the code of all function bodies
	MaxNameSectionBytes = 4 << 20   // the "name" custom section
	// MaxTableElements bounds the references of all of an instance's tables
	// together (declared minimums, and growth through BoundTables) and the
	// elements of all element segments, each kept per instance: wazero holds
	// a reference in 8 bytes, so 8 MiB per instance.
	MaxTableElements = 1 << 20
)

// ErrRefused is wrapped by every error of Check. The host exports it as
// host.ErrModuleRefused, hence its text.
var ErrRefused = errors.New("host: module refused")

const (
	secCustom   = 0
	secType     = 1
	secImport   = 2
	secFunction = 3
	secTable    = 4
	secGlobal   = 6
	secExport   = 7
	secElement  = 9
	secCode     = 10
	secData     = 11
)

var header = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// checker walks one module.
type checker struct {
	params    []uint32 // parameter count of each type
	funcs     uint32   // functions, imported and defined
	funcTypes []uint32 // type of each defined function
	tables    uint32
	tableMins uint64 // sum of the tables' minimum sizes
	globals   uint32
	elements  uint64 // elements of all element segments
}

// over reports a count above its limit.
func over(what string, n uint64, limit uint64) error {
	return fmt.Errorf("too many %s: %d, the limit is %d", what, n, limit)
}

// Check reports why wasm must not be handed to wazero, or nil.
func Check(wasm []byte) error {
	if len(wasm) > MaxModuleBytes {
		return fmt.Errorf("%w: the module has %d bytes, the limit is %d", ErrRefused, len(wasm), MaxModuleBytes)
	}
	if !bytes.HasPrefix(wasm, header) {
		return fmt.Errorf("%w: not a valid WebAssembly module (no \\0asm 01 00 00 00 header of version 1)", ErrRefused)
	}
	c := &checker{}
	r := wasmbin.Reader{B: wasm, Pos: len(header)}
	for !r.Done() && r.Err == nil {
		at := r.Pos
		id := r.Byte()
		payload := r.Bytes(r.U32())
		if r.Err != nil {
			break
		}
		if err := c.section(id, payload); err != nil {
			return fmt.Errorf("%w: %s section at byte %d: %w", ErrRefused, sectionName(id), at, err)
		}
	}
	if r.Err != nil {
		return fmt.Errorf("%w: not a valid WebAssembly module: %w", ErrRefused, r.Err)
	}
	return nil
}

func sectionName(id byte) string {
	names := []string{"custom", "type", "import", "function", "table", "memory", "global",
		"export", "start", "element", "code", "data", "data count", "tag"}
	if int(id) < len(names) {
		return names[id]
	}
	return fmt.Sprintf("unknown (id %d)", id)
}

// vector reads a vector's count and refuses one above limit or larger than
// the bytes left (every entry takes at least one byte).
func vector(r *wasmbin.Reader, what string, limit uint64) (uint32, error) {
	n := r.U32()
	if r.Err != nil {
		return 0, r.Err
	}
	if uint64(n) > limit {
		return 0, over(what, uint64(n), limit)
	}
	if left := len(r.B) - r.Pos; uint64(n) > uint64(left) {
		return 0, fmt.Errorf("%d %s declared in the %d bytes left", n, what, left)
	}
	return n, nil
}

func (c *checker) section(id byte, b []byte) error {
	r := &wasmbin.Reader{B: b}
	var err error
	switch id {
	case secCustom:
		name := r.Name()
		if r.Err == nil && name == "name" && len(b) > MaxNameSectionBytes {
			return fmt.Errorf("the name section has %d bytes, the limit is %d", len(b), MaxNameSectionBytes)
		}
		if r.Err == nil && name == "name" {
			err = c.names(r)
		}
		return errors.Join(err, r.Err)
	case secType:
		err = c.types(r)
	case secImport:
		err = c.imports(r)
	case secFunction:
		err = c.functions(r)
	case secTable:
		err = c.tableSection(r)
	case secGlobal:
		return c.globalSection(r)
	case secExport:
		_, err = vector(r, "exports", MaxExports)
		return err // the entries are names and indices: wazero checks them
	case secElement:
		err = c.elementSection(r)
	case secCode:
		err = c.code(r)
	case secData:
		_, err = vector(r, "data segments", MaxDataSegments)
		return err // each segment's bytes are in the module
	default:
		return nil // memory, start, data count, tag: fixed-size entries
	}
	if err != nil {
		return err
	}
	return r.End()
}

func (c *checker) types(r *wasmbin.Reader) error {
	n, err := vector(r, "types", MaxTypes)
	if err != nil {
		return err
	}
	for i := uint32(0); i < n && r.Err == nil; i++ {
		if form := r.Byte(); form != 0x60 {
			return fmt.Errorf("type %d has form 0x%02x (only function types are accepted)", i, form)
		}
		np, err := vector(r, fmt.Sprintf("parameters of type %d", i), MaxParams)
		if err != nil {
			return err
		}
		r.ValTypes(np)
		nr, err := vector(r, fmt.Sprintf("results of type %d", i), MaxResults)
		if err != nil {
			return err
		}
		r.ValTypes(nr)
		c.params = append(c.params, np)
	}
	return r.Err
}

func (c *checker) imports(r *wasmbin.Reader) error {
	n, err := vector(r, "imports", MaxImports)
	if err != nil {
		return err
	}
	for i := uint32(0); i < n && r.Err == nil; i++ {
		r.Name()
		r.Name()
		switch kind := r.Byte(); kind {
		case 0x00:
			r.U32()
			c.funcs++
		case 0x01:
			r.RefType()
			min, _, _ := r.Limits()
			if err := c.table(min); err != nil {
				return err
			}
		case 0x02:
			r.Limits()
		case 0x03:
			r.ValTypes(1)
			r.Byte()
			c.globals++
		default:
			return fmt.Errorf("import %d has kind 0x%02x", i, kind)
		}
	}
	if c.globals > MaxGlobals {
		return over("globals", uint64(c.globals), MaxGlobals)
	}
	return r.Err
}

func (c *checker) functions(r *wasmbin.Reader) error {
	n, err := vector(r, "functions", MaxFunctions)
	if err != nil {
		return err
	}
	if uint64(c.funcs)+uint64(n) > MaxFunctions {
		return over("functions, imported and defined", uint64(c.funcs)+uint64(n), MaxFunctions)
	}
	c.funcs += n
	for i := uint32(0); i < n && r.Err == nil; i++ {
		c.funcTypes = append(c.funcTypes, r.U32())
	}
	return r.Err
}

// table counts one table of minimum size min.
func (c *checker) table(min uint32) error {
	c.tables++
	c.tableMins += uint64(min)
	if c.tables > MaxTables {
		return over("tables", uint64(c.tables), MaxTables)
	}
	if c.tableMins > MaxTableElements {
		return over("table elements (the minimum sizes of all tables)", c.tableMins, MaxTableElements)
	}
	return nil
}

func (c *checker) tableSection(r *wasmbin.Reader) error {
	n, err := vector(r, "tables", MaxTables)
	if err != nil {
		return err
	}
	for i := uint32(0); i < n && r.Err == nil; i++ {
		if !r.Done() && r.B[r.Pos] == 0x40 { // a table with an initializer expression
			return fmt.Errorf("table %d has an initializer expression (function references proposal)", i)
		}
		r.RefType()
		if !r.Done() && r.B[r.Pos] > 1 {
			return fmt.Errorf("table %d has limits flags 0x%02x (a table is neither shared nor 64-bit)", i, r.B[r.Pos])
		}
		min, _, _ := r.Limits()
		if err := c.table(min); err != nil {
			return err
		}
	}
	return r.Err
}

func (c *checker) globalSection(r *wasmbin.Reader) error {
	n, err := vector(r, "globals", MaxGlobals)
	if err != nil {
		return err
	}
	if uint64(c.globals)+uint64(n) > MaxGlobals {
		return over("globals, imported and defined", uint64(c.globals)+uint64(n), MaxGlobals)
	}
	c.globals += n
	return nil // each global's type and constant expression: wazero checks them
}

func (c *checker) elementSection(r *wasmbin.Reader) error {
	n, err := vector(r, "element segments", MaxElementSegments)
	if err != nil {
		return err
	}
	for i := uint32(0); i < n && r.Err == nil; i++ {
		flags := r.U32()
		if flags > 7 {
			return fmt.Errorf("element segment %d has flags %d", i, flags)
		}
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			r.U32()
		}
		if flags&1 == 0 { // active: offset expression
			skipConstExpr(r)
		}
		if flags&3 != 0 { // elemkind or reftype
			r.Byte()
		}
		count, err := vector(r, fmt.Sprintf("elements of element segment %d", i), MaxTableElements)
		if err != nil {
			return err
		}
		c.elements += uint64(count)
		if c.elements > MaxTableElements {
			return over("elements of all element segments", c.elements, MaxTableElements)
		}
		for j := uint32(0); j < count && r.Err == nil; j++ {
			if flags&4 != 0 {
				skipConstExpr(r)
			} else {
				r.U32()
			}
		}
	}
	return r.Err
}

// skipConstExpr skips a constant expression up to and with its end. The
// instructions a constant expression may hold have at most one immediate,
// a LEB128 or a fixed-size constant.
func skipConstExpr(r *wasmbin.Reader) {
	for r.Err == nil {
		switch op := r.Byte(); op {
		case 0x0B: // end
			return
		case 0x41, 0x42, 0xD0: // i32.const, i64.const, ref.null
			r.S64()
		case 0x23, 0xD2: // global.get, ref.func
			r.U32()
		case 0x43:
			r.Bytes(4)
		case 0x44:
			r.Bytes(8)
		case 0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E: // extended constant expressions
		case 0xFD: // v128.const
			if r.U32() != 12 {
				r.Err = errors.New("a SIMD instruction other than v128.const in a constant expression")
				return
			}
			r.Bytes(16)
		default:
			if r.Err == nil {
				r.Err = fmt.Errorf("instruction 0x%02x in a constant expression", op)
			}
			return
		}
	}
}

func (c *checker) code(r *wasmbin.Reader) error {
	n, err := vector(r, "function bodies", MaxFunctions)
	if err != nil {
		return err
	}
	var total uint64
	for i := uint32(0); i < n && r.Err == nil; i++ {
		fn := c.funcs - uint32(len(c.funcTypes)) + i // the function's index
		size := r.U32()
		if size > MaxFunctionBytes {
			return over(fmt.Sprintf("bytes of the body of function %d", fn), uint64(size), MaxFunctionBytes)
		}
		if total += uint64(size); total > MaxCodeBytes {
			return over("bytes of code (all function bodies)", total, MaxCodeBytes)
		}
		body := &wasmbin.Reader{B: r.Bytes(size)}
		if r.Err != nil {
			break
		}
		var locals uint64
		if int(i) < len(c.funcTypes) && int(c.funcTypes[i]) < len(c.params) {
			locals = uint64(c.params[c.funcTypes[i]])
		}
		groups, err := vector(body, fmt.Sprintf("local groups of function %d", fn), MaxLocals)
		if err != nil {
			return err
		}
		for g := uint32(0); g < groups && body.Err == nil; g++ {
			locals += uint64(body.U32())
			if locals > MaxLocals {
				return over(fmt.Sprintf("parameters and locals of function %d", fn), locals, MaxLocals)
			}
			body.ValTypes(1)
		}
		if body.Err != nil {
			return fmt.Errorf("function %d: %w", fn, body.Err)
		}
	}
	return r.Err
}

// names walks the name section's subsections, refusing a count larger
// than the bytes left.
func (c *checker) names(r *wasmbin.Reader) error {
	for !r.Done() && r.Err == nil {
		id := r.Byte()
		sub := &wasmbin.Reader{B: r.Bytes(r.U32())}
		if r.Err != nil {
			break
		}
		switch id {
		case 1: // function names
			if _, err := vector(sub, "function names", MaxFunctions); err != nil {
				return err
			}
		case 2: // local names, by function
			n, err := vector(sub, "functions with local names", MaxFunctions)
			if err != nil {
				return err
			}
			for i := uint32(0); i < n && sub.Err == nil; i++ {
				sub.U32()
				m, err := vector(sub, "local names of one function", MaxLocals)
				if err != nil {
					return err
				}
				for j := uint32(0); j < m && sub.Err == nil; j++ {
					sub.U32()
					sub.Name()
				}
			}
		}
	}
	return r.Err
}
