package integrity

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	k := testKeyring(t, "k1")
	for _, tc := range []struct {
		name, stream, event string
	}{
		{"small", "audit:stream", `{"action":"login","user":"alice"}`},
		{"empty object", "audit:stream", `{}`},
		{"unicode and escapes", "audit:stream", `{"note":"caf\u00e9 ☕ \"quoted\"","n":[1,2,{"x":null}]}`},
		{"empty stream name", "", `{"a":1}`},
		{"whitespace kept", "s", "  {\n  \"a\" : 1\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := signed(t, k, tc.stream, tc.event)
			assert.Equal(t, "k1", env.KeyID)
			assert.Len(t, env.Sig, 64)
			got, err := k.Verify(tc.stream, entry(env))
			require.NoError(t, err)
			assert.Equal(t, env, got)
			requireFieldsAgree(t, k, tc.stream, entry(env), got, err)
			assert.Equal(t, "", Reason(err))
		})
	}
}

func TestVerifyRejectsOtherStream(t *testing.T) {
	k := testKeyring(t, "k1")
	env := signed(t, k, "audit:stream", `{"a":1}`)
	_, err := k.Verify("audit:other", entry(env))
	requireFieldsAgree(t, k, "audit:other", entry(env), Envelope{}, err)
	require.ErrorIs(t, err, ErrSignatureMismatch)
	assert.Equal(t, "signature_mismatch", Reason(err))
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testKey(t), testKey(t)
	before, err := NewKeyring("2026-01", map[string][]byte{"2026-01": oldKey})
	require.NoError(t, err)
	env := signed(t, before, "s", `{"a":1}`)

	after, err := NewKeyring("2026-07", map[string][]byte{"2026-01": oldKey, "2026-07": newKey})
	require.NoError(t, err)
	_, err = after.Verify("s", entry(env))
	require.NoError(t, err, "an entry signed with the old key verifies after rotation")
	fresh := signed(t, after, "s", `{"a":2}`)
	assert.Equal(t, "2026-07", fresh.KeyID)

	retired, err := NewKeyring("2026-07", map[string][]byte{"2026-07": newKey})
	require.NoError(t, err)
	_, err = retired.Verify("s", entry(env))
	requireFieldsAgree(t, retired, "s", entry(env), Envelope{}, err)
	require.ErrorIs(t, err, ErrUnknownKeyID)
	assert.Equal(t, "unknown_key_id", Reason(err))
	assert.Contains(t, err.Error(), `"2026-01"`)
	_, err = retired.Verify("s", entry(fresh))
	require.NoError(t, err)
}

func TestVerifyFlippedBits(t *testing.T) {
	k := testKeyring(t, "k1")
	env := signed(t, k, "s", `{"action":"delete","target":"/etc/passwd"}`)
	for _, field := range []string{FieldEvent, FieldSig} {
		orig := entry(env)[field].(string)
		for i := 0; i < len(orig); i++ {
			for bit := 0; bit < 8; bit++ {
				b := []byte(orig)
				b[i] ^= 1 << bit
				vals := entry(env)
				vals[field] = string(b)
				_, err := k.Verify("s", vals)
				require.Error(t, err, "field %s byte %d bit %d", field, i, bit)
				requireFieldsAgree(t, k, "s", vals, Envelope{}, err)
				if field == FieldEvent {
					require.ErrorIs(t, err, ErrSignatureMismatch)
				} else {
					// A flipped sig bit is a mismatch when the result is
					// still lowercase hex, malformed otherwise.
					assert.True(t, Reason(err) == "signature_mismatch" || Reason(err) == "malformed_envelope", "got %v", err)
				}
			}
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	k := testKeyring(t, "k1").WithMaxEventBytes(128)
	good := entry(signed(t, k, "s", `{"a":1}`))
	with := func(change func(m map[string]any)) map[string]any {
		m := make(map[string]any, len(good))
		for f, v := range good {
			m[f] = v
		}
		change(m)
		return m
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		field  string
	}{
		{"missing v", with(func(m map[string]any) { delete(m, FieldVersion) }), FieldVersion},
		{"missing kid", with(func(m map[string]any) { delete(m, FieldKeyID) }), FieldKeyID},
		{"missing event", with(func(m map[string]any) { delete(m, FieldEvent) }), FieldEvent},
		{"missing sig", with(func(m map[string]any) { delete(m, FieldSig) }), FieldSig},
		{"extra field", with(func(m map[string]any) { m["user"] = "mallory" }), "user"},
		{"version 3", with(func(m map[string]any) { m[FieldVersion] = "3" }), FieldVersion},
		{"version 2 without its chain fields", with(func(m map[string]any) { m[FieldVersion] = "2" }), FieldSource},
		{"empty version", with(func(m map[string]any) { m[FieldVersion] = "" }), FieldVersion},
		{"v not a string", with(func(m map[string]any) { m[FieldVersion] = 1 }), FieldVersion},
		{"event not a string", with(func(m map[string]any) { m[FieldEvent] = []byte(`{}`) }), FieldEvent},
		{"empty kid", with(func(m map[string]any) { m[FieldKeyID] = "" }), FieldKeyID},
		{"kid with space", with(func(m map[string]any) { m[FieldKeyID] = "k 1" }), FieldKeyID},
		{"kid too long", with(func(m map[string]any) { m[FieldKeyID] = strings.Repeat("k", 65) }), FieldKeyID},
		{"sig uppercase", with(func(m map[string]any) { m[FieldSig] = strings.ToUpper(good[FieldSig].(string)) }), FieldSig},
		{"sig short", with(func(m map[string]any) { m[FieldSig] = good[FieldSig].(string)[:62] }), FieldSig},
		{"sig long", with(func(m map[string]any) { m[FieldSig] = good[FieldSig].(string) + "00" }), FieldSig},
		{"sig not hex", with(func(m map[string]any) { m[FieldSig] = strings.Repeat("g", 64) }), FieldSig},
		{"empty event", with(func(m map[string]any) { m[FieldEvent] = "" }), FieldEvent},
		{"oversized event", with(func(m map[string]any) { m[FieldEvent] = `{"a":"` + strings.Repeat("x", 128) + `"}` }), FieldEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Verify("s", tc.values)
			requireFieldsAgree(t, k, "s", tc.values, Envelope{}, err)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Equal(t, "malformed_envelope", Reason(err))
			var ee *EnvelopeError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tc.field, ee.Field)
			assert.Contains(t, err.Error(), `field "`+tc.field+`"`)
		})
	}
}

func TestVerifyUnsigned(t *testing.T) {
	k := testKeyring(t, "k1")
	for _, tc := range []struct {
		name   string
		values map[string]any
	}{
		{"raw event", map[string]any{FieldEvent: `{"event_id":"x"}`}},
		{"arbitrary fields", map[string]any{"user": "alice", "action": "login"}},
		{"version and event only", map[string]any{FieldVersion: "1", FieldEvent: `{}`}},
		{"no fields", map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Verify("s", tc.values)
			requireFieldsAgree(t, k, "s", tc.values, Envelope{}, err)
			require.ErrorIs(t, err, ErrUnsigned)
			assert.Equal(t, "unsigned", Reason(err))
			assert.EqualError(t, err, "integrity: unsigned entry: no kid and no sig field")
		})
	}
}

func TestVerifyNamesExtraFields(t *testing.T) {
	k := testKeyring(t, "k1")
	vals := entry(signed(t, k, "s", `{}`))
	for _, f := range []string{"e5", "e1", "e4", "e3", "e2"} {
		vals[f] = "x"
	}
	_, err := k.Verify("s", vals)
	requireFieldsAgree(t, k, "s", vals, Envelope{}, err)
	require.ErrorIs(t, err, ErrMalformed)
	assert.EqualError(t, err, `integrity: malformed envelope: field "e1": unexpected field(s) ["e1" "e2" "e3"]; envelope v1 has only v, kid, event, sig`)
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrSignatureMismatch, "signature_mismatch"},
		{fmt.Errorf("entry 1-0: %w", ErrUnknownKeyID), "unknown_key_id"},
		{&EnvelopeError{Field: "v", Problem: "x", Err: ErrMalformed}, "malformed_envelope"},
		{ErrUnsigned, "unsigned"},
		{errors.New("connection reset"), "other"},
		{ErrInvalidEvent, "other"},
	} {
		assert.Equal(t, tc.want, Reason(tc.err), "%v", tc.err)
	}
}

func TestEnvelopeValuesOrder(t *testing.T) {
	env := Envelope{KeyID: "k1", EventID: "e", Event: []byte(`{"event_id":"e"}`), Sig: strings.Repeat("0", 64)}
	assert.Equal(t, []any{"v", "1", "kid", "k1", "event", []byte(`{"event_id":"e"}`), "sig", strings.Repeat("0", 64)}, env.Values())
}

// TestVerifyFields covers what only a field list can hold: a field named
// twice (malformed, whichever value is signed), a name without a value; and
// that the envelope shares the fields' memory.
func TestVerifyFields(t *testing.T) {
	k := testKeyring(t, "k1")
	env := signed(t, k, "s", `{"a":1}`)
	good := []string{FieldVersion, Version, FieldKeyID, env.KeyID, FieldEvent, string(env.Event), FieldSig, env.Sig}

	got, err := k.VerifyFields("s", good)
	require.NoError(t, err)
	assert.Equal(t, env, got)
	assert.Same(t, unsafe.StringData(good[5]), &got.Event[0], "the event is not copied")

	// A field named twice is malformed, whichever of its values is
	// signed, in either order, even with the same value twice.
	for _, name := range envelopeFields[:4] {
		for _, order := range []string{"signed value first", "signed value last"} {
			other := "x"
			if name == FieldEvent {
				other = `{"a":2}`
			}
			fields := slices.Clone(good)
			i := slices.Index(fields, name)
			if order == "signed value first" {
				fields = append(fields, name, other)
			} else {
				fields = slices.Insert(fields, i, name, other)
			}
			got, err := k.VerifyFields("s", fields)
			assert.Equal(t, "malformed_envelope", Reason(err), "%s twice, %s: %v", name, order, err)
			assert.Equal(t, Envelope{}, got)
			var ee *EnvelopeError
			if assert.ErrorAs(t, err, &ee) {
				assert.Equal(t, name, ee.Field)
			}
		}
	}
	_, err = k.VerifyFields("s", append(slices.Clone(good), FieldSig, env.Sig))
	assert.Equal(t, "malformed_envelope", Reason(err), "sig twice with the same value")

	for _, tc := range []struct {
		name   string
		fields []string
		field  string
		reason string
	}{
		{"a name without a value", append(slices.Clone(good), "extra"), "extra", "malformed_envelope"},
		{"sig without a value", append(slices.Clone(good[:6]), FieldSig), FieldSig, "malformed_envelope"},
		{"no fields", nil, "", "unsigned"},
		{"kid missing, sig present", []string{FieldVersion, Version, FieldEvent, string(env.Event), FieldSig, env.Sig}, FieldKeyID, "malformed_envelope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.VerifyFields("s", tc.fields)
			require.Error(t, err)
			assert.Equal(t, Envelope{}, got)
			assert.Equal(t, tc.reason, Reason(err), "%v", err)
			var ee *EnvelopeError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tc.field, ee.Field)
		})
	}
}
