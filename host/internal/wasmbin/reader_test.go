package wasmbin

import "testing"

// TestS32: signed LEB128 of i32 values, 5-byte negative ones included (how
// a data offset at or above 2 GiB is written), and values out of range.
func TestS32(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want int32
	}{
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x78}, -1 << 31},
		{[]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, -1},
		{[]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x07}, 1<<31 - 1},
		{[]byte{0x7F}, -1},
		{[]byte{0xC0, 0xBB, 0x78}, -123456},
	} {
		r := Reader{B: c.b}
		got := r.S32()
		if r.Err != nil || got != c.want {
			t.Errorf("s32(% x) = %d, %v; want %d", c.b, got, r.Err, c.want)
		}
	}
}

func TestS32OutOfRange(t *testing.T) {
	for _, b := range [][]byte{
		{0x80, 0x80, 0x80, 0x80, 0x08},       // 2^31
		{0xFF, 0xFF, 0xFF, 0xFF, 0x4F},       // below -2^31
		{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, // longer than 5 bytes
	} {
		r := Reader{B: b}
		r.S32()
		if r.Err == nil {
			t.Errorf("s32(% x): no error", b)
		}
	}
}
