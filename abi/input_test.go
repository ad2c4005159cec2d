package abi_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
)

func sample() *abi.Input {
	return &abi.Input{
		Deliveries: 3,
		EntryID:    []byte("1700000000000-7"),
		Stream:     []byte("audit:stream"),
		KeyID:      []byte("2026-11"),
		EventID:    []byte("01a2-ev"),
		Event:      []byte(`{"event_id":"01a2-ev","actor":"alice"}`),
	}
}

func TestInputRoundTrip(t *testing.T) {
	in := sample()
	rec := abi.AppendInput(nil, in)
	require.Len(t, rec, in.Size())
	assert.EqualValues(t, 3, binary.LittleEndian.Uint32(rec), "deliveries come first, little-endian")
	assert.EqualValues(t, len(in.Event), binary.LittleEndian.Uint32(rec[20:]), "the event length is the sixth u32")

	out, err := abi.DecodeInput(rec)
	require.NoError(t, err)
	assert.Equal(t, *in, out)

	// Decoded slices alias the record and cannot grow into the next field.
	out.EntryID = append(out.EntryID, 'x')
	again, err := abi.DecodeInput(rec)
	require.NoError(t, err)
	assert.Equal(t, in.Stream, again.Stream)
}

func TestAppendInputAppends(t *testing.T) {
	prefix := []byte("keep")
	rec := abi.AppendInput(prefix, sample())
	assert.True(t, bytes.HasPrefix(rec, []byte("keep")))
	_, err := abi.DecodeInput(rec[4:])
	require.NoError(t, err)
}

func TestDecodeInputRejectsInconsistentRecords(t *testing.T) {
	good := abi.AppendInput(nil, sample())
	longer := binary.LittleEndian.AppendUint32(nil, 1)
	for name, rec := range map[string][]byte{
		"empty":            nil,
		"short header":     good[:abi.InputHeaderSize-1],
		"truncated body":   good[:len(good)-1],
		"trailing bytes":   append(append([]byte(nil), good...), 'x'),
		"lengths overflow": append(append(append([]byte(nil), longer...), bytes.Repeat([]byte{0xff}, 20)...), 'x'),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := abi.DecodeInput(rec)
			require.ErrorIs(t, err, abi.ErrShortInput)
		})
	}
}

func TestVerdictNames(t *testing.T) {
	for v, want := range map[abi.Verdict]string{
		abi.VerdictOK: "ok", abi.VerdictDrop: "drop", abi.VerdictRetry: "retry", abi.VerdictReject: "reject",
		7: "invalid(7)", -12: "invalid(-12)", 0x7fffffff: "invalid(2147483647)",
	} {
		assert.Equal(t, want, v.String())
		assert.Equal(t, v >= 0 && v <= 3, v.Valid(), "%d", v)
	}
}

func FuzzDecodeInput(f *testing.F) {
	f.Add(abi.AppendInput(nil, sample()))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 24))
	f.Fuzz(func(t *testing.T, rec []byte) {
		in, err := abi.DecodeInput(rec)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		assert.Equal(t, rec, abi.AppendInput(nil, &in))
	})
}
