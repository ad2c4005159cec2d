package abi

import (
	"encoding/binary"
	"errors"
)

// InputHeaderSize is the size of the fixed header of an input record: six
// little-endian uint32s.
const InputHeaderSize = 24

// ErrShortInput is returned by DecodeInput for a record whose lengths do not
// match its size.
var ErrShortInput = errors.New("abi: input record truncated or inconsistent")

// Input is what a plugin receives for one event. In a decoded Input every
// slice aliases the record it was decoded from.
type Input struct {
	Deliveries uint32 // how many times this entry was delivered, 1 on first delivery
	EntryID    []byte // Redis stream entry id, e.g. "1700000000000-0"
	Stream     []byte // stream the entry was read from
	KeyID      []byte // id of the key that signed it
	EventID    []byte // the event's event_id
	Event      []byte // the event: a JSON object's text
}

// Size returns the encoded size of in.
func (in *Input) Size() int {
	return InputHeaderSize + len(in.EntryID) + len(in.Stream) + len(in.KeyID) + len(in.EventID) + len(in.Event)
}

// AppendInput appends the encoding of in to dst:
//
//	u32 deliveries, u32 len(entry_id), u32 len(stream), u32 len(key_id),
//	u32 len(event_id), u32 len(event), then the five byte strings in that order.
func AppendInput(dst []byte, in *Input) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, in.Deliveries)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in.EntryID)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in.Stream)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in.KeyID)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in.EventID)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in.Event)))
	dst = append(dst, in.EntryID...)
	dst = append(dst, in.Stream...)
	dst = append(dst, in.KeyID...)
	dst = append(dst, in.EventID...)
	return append(dst, in.Event...)
}

// DecodeInput decodes a record made by AppendInput. The slices of the result
// alias b.
func DecodeInput(b []byte) (Input, error) {
	var in Input
	if len(b) < InputHeaderSize {
		return in, ErrShortInput
	}
	in.Deliveries = binary.LittleEndian.Uint32(b)
	var lens [5]uint64
	var total uint64
	for i := range lens {
		lens[i] = uint64(binary.LittleEndian.Uint32(b[4+4*i:]))
		total += lens[i]
	}
	if total != uint64(len(b)-InputHeaderSize) {
		return in, ErrShortInput
	}
	rest := b[InputHeaderSize:]
	take := func(n uint64) []byte {
		s := rest[:n:n]
		rest = rest[n:]
		return s
	}
	in.EntryID = take(lens[0])
	in.Stream = take(lens[1])
	in.KeyID = take(lens[2])
	in.EventID = take(lens[3])
	in.Event = take(lens[4])
	return in, nil
}
