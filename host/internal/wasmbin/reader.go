// Package wasmbin reads and writes the pieces of the WebAssembly binary
// format that the host's own module passes need: the pre-check that bounds
// a module before wazero decodes it, and the meter that instruments it.
package wasmbin

import (
	"errors"
	"fmt"
)

// ErrMalformed reports bytes that are not valid WebAssembly binary format.
var ErrMalformed = errors.New("wasm: malformed module")

// ErrUnsupported reports WebAssembly that this package's decoders do not
// know (a proposal auditproc does not accept, or a newer encoding).
var ErrUnsupported = errors.New("wasm: unsupported module")

// Reader decodes the WebAssembly binary format. The first error sticks:
// later reads return zero values, so a decoder checks r.Err once.
type Reader struct {
	B   []byte // what is read
	Pos int    // the next byte to read
	Err error  // the first error; wraps ErrMalformed or ErrUnsupported
}

// Done reports whether every byte was read.
func (r *Reader) Done() bool { return r.Pos >= len(r.B) }

// Fail records a malformed-module error unless one is recorded.
func (r *Reader) Fail(format string, args ...any) {
	if r.Err == nil {
		r.Err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

// End reports r.Err, or an error when bytes are left over.
func (r *Reader) End() error {
	if r.Err == nil && r.Pos != len(r.B) {
		r.Fail("%d unexpected bytes at the end of a section", len(r.B)-r.Pos)
	}
	return r.Err
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.Err != nil {
		return 0
	}
	if r.Done() {
		r.Fail("unexpected end at byte %d", r.Pos)
		return 0
	}
	c := r.B[r.Pos]
	r.Pos++
	return c
}

// Bytes reads n bytes (a view of B, not a copy).
func (r *Reader) Bytes(n uint32) []byte {
	if r.Err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.B)-r.Pos) {
		r.Fail("%d bytes wanted at byte %d, %d left", n, r.Pos, len(r.B)-r.Pos)
		return nil
	}
	s := r.B[r.Pos : r.Pos+int(n)]
	r.Pos += int(n)
	return s
}

// U32 decodes an unsigned LEB128 of at most 5 bytes.
func (r *Reader) U32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.Byte()
		if r.Err != nil {
			return 0
		}
		v |= uint64(c&0x7F) << shift
		if c&0x80 == 0 {
			if v > 1<<32-1 {
				r.Fail("u32 overflows at byte %d", r.Pos)
				return 0
			}
			return uint32(v)
		}
	}
	r.Fail("u32 longer than 5 bytes at byte %d", r.Pos)
	return 0
}

// S64 decodes a signed LEB128 of at most 10 bytes (i32/i64 constants,
// block types, heap types). Bits beyond 64 are dropped: callers that copy
// the bytes unchanged only need to know where it ends.
func (r *Reader) S64() int64 {
	var v int64
	for shift := 0; shift < 70; shift += 7 {
		c := r.Byte()
		if r.Err != nil {
			return 0
		}
		if shift < 64 {
			v |= int64(c&0x7F) << shift
		}
		if c&0x80 == 0 {
			if shift+7 < 64 && c&0x40 != 0 {
				v |= -1 << (shift + 7) // sign-extend
			}
			return v
		}
	}
	r.Fail("signed LEB128 longer than 10 bytes at byte %d", r.Pos)
	return 0
}

// S32 decodes a signed LEB128 of at most 5 bytes.
func (r *Reader) S32() int32 {
	var v int64
	for shift := 0; shift < 35; shift += 7 {
		c := r.Byte()
		if r.Err != nil {
			return 0
		}
		v |= int64(c&0x7F) << shift
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v |= -1 << (shift + 7) // sign-extend
			}
			if v < -1<<31 || v > 1<<31-1 {
				r.Fail("s32 overflows at byte %d", r.Pos)
				return 0
			}
			return int32(v)
		}
	}
	r.Fail("s32 longer than 5 bytes at byte %d", r.Pos)
	return 0
}

// Name reads a length-prefixed name.
func (r *Reader) Name() string {
	return string(r.Bytes(r.U32()))
}

// ValTypes skips n value types, accepting only the single-byte ones.
func (r *Reader) ValTypes(n uint32) {
	for i := uint32(0); i < n && r.Err == nil; i++ {
		switch t := r.Byte(); t {
		case 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F:
		default:
			if r.Err == nil {
				r.Err = fmt.Errorf("%w: value type 0x%02x", ErrUnsupported, t)
			}
		}
	}
}

// RefType skips a reference type (funcref or externref).
func (r *Reader) RefType() {
	switch t := r.Byte(); t {
	case 0x70, 0x6F:
	default:
		if r.Err == nil {
			r.Err = fmt.Errorf("%w: reference type 0x%02x", ErrUnsupported, t)
		}
	}
}

// Limits decodes the limits of a table or memory: the minimum, and the
// maximum when hasMax.
func (r *Reader) Limits() (min, max uint32, hasMax bool) {
	flags := r.Byte()
	if flags > 3 {
		if r.Err == nil {
			r.Err = fmt.Errorf("%w: limits flags 0x%02x", ErrUnsupported, flags)
		}
		return 0, 0, false
	}
	min = r.U32()
	if flags&1 != 0 {
		max, hasMax = r.U32(), true
	}
	return min, max, hasMax
}

// MemArg skips an alignment (with a memory index when bit 6 is set) and an
// offset.
func (r *Reader) MemArg() {
	align := r.U32()
	if align&0x40 != 0 {
		r.U32()
	}
	r.S64() // the offset: an unsigned LEB128 ends the same way
}

// AppendU32 appends v as an unsigned LEB128.
func AppendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// AppendS32 appends v as a signed LEB128.
func AppendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// AppendName appends s as a length-prefixed name.
func AppendName(b []byte, s string) []byte {
	return append(AppendU32(b, uint32(len(s))), s...)
}
