package integrity

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"
)

// Field-presence bits of FuzzVerify's mask.
const (
	hasV = 1 << iota
	hasKid
	hasEvent
	hasSig
	hasExtra
)

// FuzzVerify feeds Verify arbitrary entries under the public vector key
// (seeded with the vectors, so the fuzzer starts from valid MACs). Verify
// must never panic, must classify every failure, must never name key
// material, and must accept only entries whose sig is the MAC.
func FuzzVerify(f *testing.F) {
	vf, k := loadVectors(f)
	key := k.active.secret
	for _, v := range vf.Vectors {
		mask := 0
		for bit, name := range []string{FieldVersion, FieldKeyID, FieldEvent, FieldSig} {
			if _, ok := v.Fields[name]; ok {
				mask |= 1 << bit
			}
		}
		if len(v.Fields) > 4 {
			mask |= hasExtra
		}
		f.Add(v.Stream, v.Fields[FieldVersion], v.Fields[FieldKeyID], v.Fields[FieldEvent], v.Fields[FieldSig], uint8(mask))
	}
	f.Fuzz(func(t *testing.T, stream, v, kid, event, sig string, mask uint8) {
		values := map[string]any{}
		for bit, kv := range [][2]string{{FieldVersion, v}, {FieldKeyID, kid}, {FieldEvent, event}, {FieldSig, sig}, {"extra", ""}} {
			if mask&(1<<bit) != 0 {
				values[kv[0]] = kv[1]
			}
		}
		env, err := k.Verify(stream, values)
		requireFieldsAgree(t, k, stream, values, env, err)
		if err != nil {
			require.Contains(t, []string{"signature_mismatch", "unknown_key_id", "malformed_envelope", "unsigned"}, Reason(err), "%v", err)
			require.NotContains(t, err.Error(), hex.EncodeToString(key))
			require.NotContains(t, err.Error(), string(key))
			return
		}
		require.Len(t, values, 4)
		assert.Equal(t, Version, v)
		assert.Equal(t, kid, env.KeyID)
		assert.Equal(t, event, string(env.Event))
		assert.Equal(t, sig, env.Sig)
		assert.Equal(t, referenceSig(key, referenceMACInput(kid, stream, event)), sig)
		assert.NotEmpty(t, env.EventID)
		assert.Equal(t, gjson.Get(event, EventIDMember).String(), env.EventID)
	})
}

// FuzzStamp checks that Stamp never panics, only inserts members right
// after the opening brace, is idempotent, and that what it accepts signs
// and verifies.
func FuzzStamp(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"a":1}`, ` {"event_id":"x"} `, `{"timestamp":"2026-01-01T00:00:00Z"}`,
		`{"event_id":"x","timestamp":"2026-01-01T00:00:00Z"}`, `[]`, `"s"`, `{"event_id":1}`,
		`{"x":{"event_id":"inner"}}`, `{"event\u005fid":"escaped key"}`, "{\"a\":\"\xff\"}", `{`,
	} {
		f.Add([]byte(seed))
	}
	k := testKeyring(f, "fuzz")
	now := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, event []byte) {
		in := bytes.Clone(event)
		out, id, err := Stamp(event, now)
		require.Equal(t, in, event, "Stamp does not change its input")
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidEvent)
			return
		}
		open := bytes.IndexByte(in, '{')
		require.True(t, bytes.HasPrefix(out, in[:open+1]), "prefix kept")
		require.True(t, bytes.HasSuffix(out, in[open+1:]), "producer bytes kept after the insertion")
		require.Equal(t, id, gjson.GetBytes(out, EventIDMember).String())

		again, id2, err := Stamp(out, now)
		require.NoError(t, err)
		require.Equal(t, out, again, "stamping twice changes nothing")
		require.Equal(t, id, id2)

		if len(out) > k.MaxEventBytes() {
			return
		}
		env, err := k.Sign("audit:stream", out)
		require.NoError(t, err, "a stamped event signs: %q", out)
		got, err := k.Verify("audit:stream", entry(env))
		require.NoError(t, err)
		require.Equal(t, id, got.EventID)
	})
}

// FuzzParseKeyring checks that parsing never panics, that a parsed keyring
// is consistent, and that no error quotes key material.
func FuzzParseKeyring(f *testing.F) {
	for _, seed := range []string{
		"key a hex:" + strings.Repeat("ab", 32),
		"active b\nkey a hex:" + strings.Repeat("01", 32) + "\nkey b base64:" + strings.Repeat("A", 43) + "=",
		"key a hex:" + strings.Repeat("zz", 32),
		"# comment;key a base64:%%%%;active a",
		"active\nkey",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyring(data)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidKeyring)
			for _, word := range strings.FieldsFunc(string(data), func(r rune) bool {
				return r == ';' || r == '\n' || r == ' ' || r == '\t' || r == '\r' || r == '\v' || r == '\f'
			}) {
				for _, prefix := range []string{"hex:", "base64:"} {
					if material, ok := strings.CutPrefix(word, prefix); ok && len(material) >= 8 {
						require.NotContains(t, err.Error(), material, "error quotes key material")
					}
				}
			}
			return
		}
		require.Contains(t, k.KeyIDs(), k.ActiveKeyID())
		for _, id := range k.KeyIDs() {
			require.True(t, validKeyID(id))
			require.GreaterOrEqual(t, len(k.keys[id].secret), MinKeyBytes)
		}
	})
}

// FuzzVerifyV2 feeds VerifyFields arbitrary version 2 entries (seeded with
// the v2 vectors): it never panics, classifies every failure, and accepts
// only entries whose sig is the reference version 2 MAC of their fields,
// with a well-formed link.
func FuzzVerifyV2(f *testing.F) {
	vf, k := loadVectors(f)
	key := k.active.secret
	for _, v := range vf.Vectors {
		if v.Fields[FieldVersion] == Version2 {
			fl := v.Fields
			f.Add(v.Stream, fl[FieldSource], fl[FieldSeq], fl[FieldPrev], fl[FieldKind], fl[FieldEvent], fl[FieldSig], uint8(0))
		}
	}
	f.Fuzz(func(t *testing.T, stream, src, seq, prev, kind, event, sig string, twist uint8) {
		fields := []string{FieldVersion, Version2, FieldKeyID, "test-vector-1", FieldSource, src, FieldSeq, seq,
			FieldPrev, prev, FieldKind, kind, FieldEvent, event, FieldSig, sig}
		switch twist % 4 {
		case 1:
			fields = append(fields, FieldSeq, seq) // repeated
		case 2:
			fields = fields[:len(fields)-4] // no event, no sig
		}
		env, err := k.VerifyFields(stream, fields)
		if err != nil {
			require.Contains(t, []string{"signature_mismatch", "unknown_key_id", "malformed_envelope", "unsigned"}, Reason(err), "%v", err)
			require.NotContains(t, err.Error(), hex.EncodeToString(key))
			return
		}
		require.NotContains(t, []uint8{1, 2}, twist%4, "a repeated or missing field never verifies")
		m := map[string]string{"kid": "test-vector-1", "src": src, "seq": seq, "prev": prev, "kind": kind, "event": event}
		require.Equal(t, referenceSig(key, referenceMACInput2(m, stream)), sig)
		assert.Equal(t, src, env.Source)
		assert.Equal(t, seq, strconv.FormatUint(env.Seq, 10))
		assert.Equal(t, prev, env.Prev)
		assert.Equal(t, kind, env.Kind)
	})
}
