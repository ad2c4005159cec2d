package meter

import "fmt"

// reader decodes the WebAssembly binary format. The first error sticks:
// later reads return zero values, so a decoder checks r.err once.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) done() bool { return r.pos >= len(r.b) }

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

// end reports r.err, or an error when bytes are left over.
func (r *reader) end() error {
	if r.err == nil && r.pos != len(r.b) {
		r.fail("%d unexpected bytes at the end of a section", len(r.b)-r.pos)
	}
	return r.err
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.done() {
		r.fail("unexpected end at byte %d", r.pos)
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) bytes(n uint32) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)-r.pos) {
		r.fail("%d bytes wanted at byte %d, %d left", n, r.pos, len(r.b)-r.pos)
		return nil
	}
	s := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return s
}

// u32 decodes an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7F) << shift
		if c&0x80 == 0 {
			if v > 1<<32-1 {
				r.fail("u32 overflows at byte %d", r.pos)
				return 0
			}
			return uint32(v)
		}
	}
	r.fail("u32 longer than 5 bytes at byte %d", r.pos)
	return 0
}

// s64 skips a signed LEB128 of at most 10 bytes (i32/i64 constants, block
// types, heap types); the rewrite copies them unchanged.
func (r *reader) s64() {
	for i := 0; i < 10; i++ {
		if r.byte()&0x80 == 0 || r.err != nil {
			return
		}
	}
	r.fail("signed LEB128 longer than 10 bytes at byte %d", r.pos)
}

// s32 decodes a signed LEB128 of at most 5 bytes.
func (r *reader) s32() int32 {
	var v int64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7F) << shift
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v |= -1 << (shift + 7) // sign-extend
			}
			if v < -1<<31 || v > 1<<31-1 {
				r.fail("s32 overflows at byte %d", r.pos)
				return 0
			}
			return int32(v)
		}
	}
	r.fail("s32 longer than 5 bytes at byte %d", r.pos)
	return 0
}

func (r *reader) name() string {
	return string(r.bytes(r.u32()))
}

// valtypes skips n value types, accepting only the single-byte ones.
func (r *reader) valtypes(n uint32) {
	for i := uint32(0); i < n && r.err == nil; i++ {
		switch t := r.byte(); t {
		case 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F:
		default:
			if r.err == nil {
				r.err = fmt.Errorf("%w: value type 0x%02x", ErrUnsupported, t)
			}
		}
	}
}

func (r *reader) reftype() {
	switch t := r.byte(); t {
	case 0x70, 0x6F:
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: reference type 0x%02x", ErrUnsupported, t)
		}
	}
}

func (r *reader) limits() {
	flags := r.byte()
	if flags > 3 {
		if r.err == nil {
			r.err = fmt.Errorf("%w: limits flags 0x%02x", ErrUnsupported, flags)
		}
		return
	}
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

// memarg skips an alignment (with a memory index when bit 6 is set) and an
// offset.
func (r *reader) memarg() {
	align := r.u32()
	if align&0x40 != 0 {
		r.u32()
	}
	r.s64() // the offset: an unsigned LEB128 ends the same way
}

func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	return append(appendU32(b, uint32(len(s))), s...)
}
