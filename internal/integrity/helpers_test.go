package integrity

import (
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testKey returns a fresh random key; tests never hard-code key material
// (the only exception is the published key of testdata/vectors.json).
func testKey(t testing.TB) []byte {
	t.Helper()
	key, err := GenerateKey()
	require.NoError(t, err)
	return key
}

// testKeyring returns a keyring with one random key per id, ids[0] active.
func testKeyring(t testing.TB, ids ...string) *Keyring {
	t.Helper()
	keys := make(map[string][]byte, len(ids))
	for _, id := range ids {
		keys[id] = testKey(t)
	}
	k, err := NewKeyring(ids[0], keys)
	require.NoError(t, err)
	return k
}

// entry turns an envelope into the values map go-redis returns for it:
// field → string.
func entry(e Envelope) map[string]any {
	vals := e.Values()
	m := make(map[string]any, len(vals)/2)
	for i := 0; i < len(vals); i += 2 {
		switch v := vals[i+1].(type) {
		case []byte:
			m[vals[i].(string)] = string(v)
		default:
			m[vals[i].(string)] = fmt.Sprint(v)
		}
	}
	return m
}

// signed stamps and signs a small event for stream.
func signed(t testing.TB, k *Keyring, stream, event string) Envelope {
	t.Helper()
	stamped, _, err := Stamp([]byte(event), time.Now())
	require.NoError(t, err)
	env, err := k.Sign(stream, stamped)
	require.NoError(t, err)
	return env
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

// fieldList turns a values map into the flat name/value list Redis sends,
// names sorted; ok is false when a value is not a string (Redis only sends
// strings, so VerifyFields never sees one).
func fieldList(values map[string]any) (fields []string, ok bool) {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s, isString := values[name].(string)
		if !isString {
			return nil, false
		}
		fields = append(fields, name, s)
	}
	return fields, true
}

// requireFieldsAgree checks that VerifyFields, given values as a field
// list, returns what Verify returned for them (env, err): the same
// envelope, or an error of the same text.
func requireFieldsAgree(t testing.TB, k *Keyring, stream string, values map[string]any, env Envelope, err error) {
	t.Helper()
	fields, ok := fieldList(values)
	if !ok {
		return
	}
	got, gotErr := k.VerifyFields(stream, fields)
	if err != nil {
		require.EqualError(t, gotErr, err.Error())
		require.Equal(t, Envelope{}, got)
		return
	}
	require.NoError(t, gotErr)
	require.Equal(t, env, got)
}
