package integrity

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	require.NoError(t, err)
	b, err := GenerateKey()
	require.NoError(t, err)
	assert.Len(t, a, MinKeyBytes)
	assert.NotEqual(t, a, b, "two generated keys differ")
	assert.NotEqual(t, make([]byte, MinKeyBytes), a, "a generated key is not all zeros")
}

func TestNewKeyring(t *testing.T) {
	key := testKey(t)
	k, err := NewKeyring("b", map[string][]byte{"b": key, "a": testKey(t)})
	require.NoError(t, err)
	assert.Equal(t, "b", k.ActiveKeyID())
	assert.Equal(t, []string{"a", "b"}, k.KeyIDs())
	assert.Equal(t, DefaultMaxEventBytes, k.MaxEventBytes())

	// The keyring copies the keys: changing the caller's slice later does
	// not change what it signs with.
	env := signed(t, k, "s", `{}`)
	clear(key)
	_, err = k.Verify("s", entry(env))
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		active string
		keys   map[string][]byte
		want   string
	}{
		{"no keys", "a", nil, "no keys"},
		{"short key", "a", map[string][]byte{"a": make([]byte, MinKeyBytes-1)}, `key "a" is 31 bytes, want at least 32`},
		{"bad key id", "a b", map[string][]byte{"a b": testKey(t)}, `key id "a b"`},
		{"long key id", "a", map[string][]byte{strings.Repeat("a", 70): testKey(t)}, `key id "` + strings.Repeat("a", 64) + `…"`},
		{"unknown active", "c", map[string][]byte{"a": testKey(t), "b": testKey(t)}, `active key "c" is not in the keyring (key ids: a, b)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewKeyring(tc.active, tc.keys)
			require.ErrorIs(t, err, ErrInvalidKeyring)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, "other", Reason(err))
		})
	}
}

func TestWithMaxEventBytes(t *testing.T) {
	k := testKeyring(t, "k")
	small := k.WithMaxEventBytes(200)
	assert.Equal(t, 200, small.MaxEventBytes())
	assert.Equal(t, DefaultMaxEventBytes, k.MaxEventBytes(), "the original keyring is unchanged")
	assert.Equal(t, DefaultMaxEventBytes, k.WithMaxEventBytes(0).MaxEventBytes())

	big := signed(t, k, "s", `{"pad":"`+strings.Repeat("p", 200)+`"}`)
	_, err := small.Verify("s", entry(big))
	require.ErrorIs(t, err, ErrMalformed)
	_, err = k.Verify("s", entry(big))
	require.NoError(t, err, "same keys, default limit")
	_, err = small.Sign("s", big.Event)
	require.ErrorIs(t, err, ErrInvalidEvent)
}

func TestParseKeyring(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	hex1, b64two := hex.EncodeToString(k1), base64.StdEncoding.EncodeToString(k2)

	t.Run("file with comments", func(t *testing.T) {
		text := "# auditproc keys\n\nactive k2\n  key k1 hex:" + hex1 + "  \n\tkey k2 base64:" + b64two + "\n"
		k, err := ParseKeyring([]byte(text))
		require.NoError(t, err)
		assert.Equal(t, "k2", k.ActiveKeyID())
		assert.Equal(t, []string{"k1", "k2"}, k.KeyIDs())
		// The parsed keys are the ones written: entries signed with a keyring
		// built from the raw keys verify.
		raw, err := NewKeyring("k1", map[string][]byte{"k1": k1})
		require.NoError(t, err)
		_, err = k.Verify("s", entry(signed(t, raw, "s", `{}`)))
		require.NoError(t, err)
	})
	t.Run("single key needs no active line", func(t *testing.T) {
		k, err := ParseKeyring([]byte(FormatKeyLine("only", k1)))
		require.NoError(t, err)
		assert.Equal(t, "only", k.ActiveKeyID())
	})
	t.Run("semicolons separate lines", func(t *testing.T) {
		k, err := ParseKeyring([]byte("active k1; key k1 hex:" + hex1 + ";key k2 base64:" + b64two))
		require.NoError(t, err)
		assert.Equal(t, []string{"k1", "k2"}, k.KeyIDs())
	})

	for _, tc := range []struct {
		name, text, want string
	}{
		{"empty", "", "no keys"},
		{"comments only", "# nothing\n", "no keys"},
		{"two keys no active", "key a hex:" + hex1 + "\nkey b base64:" + b64two, "2 keys but no active key"},
		{"second active", "active a\nactive a\nkey a hex:" + hex1, "line 2: second active line"},
		{"duplicate key", "key a hex:" + hex1 + "\nkey a base64:" + b64two, `line 2: key "a" declared twice`},
		{"unknown encoding", "key a raw:" + hex1, `line 1: key "a": want hex:`},
		{"bad hex", "key a hex:" + hex1[:63] + "g", `line 1: key "a": want hex:`},
		{"odd hex", "key a hex:" + hex1[:63], `line 1: key "a": want hex:`},
		{"bad base64", "key a base64:" + b64two[:10] + "!" + b64two[11:], `line 1: key "a": want hex:`},
		{"short key", "key a hex:" + hex1[:62], `key "a" is 31 bytes`},
		{"unknown word", "\n\nsecret " + hex1, "line 3: want"},
		{"key without id", "key hex:" + hex1, "line 1: want"},
		{"active unknown", "active z\nkey a hex:" + hex1, `active key "z" is not in the keyring`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeyring([]byte(tc.text))
			require.ErrorIs(t, err, ErrInvalidKeyring)
			assert.Contains(t, err.Error(), tc.want)
			assertNoKeyMaterial(t, err.Error(), k1, k2)
		})
	}
}

func TestLoadKeyring(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	keyring := "active k1\n" + FormatKeyLine("k1", k1) + "\n" + FormatKeyLine("k2", k2) + "\n"
	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte(keyring), 0o600))
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(name string) string { return m[name] }
	}

	for _, tc := range []struct {
		name       string
		getenv     func(string) string
		wantActive string
	}{
		{"inline", env(EnvKeys, strings.ReplaceAll(keyring, "\n", ";")), "k1"},
		{"file", env(EnvKeysFile, path), "k1"},
		{"active overrides", env(EnvKeysFile, path, EnvActiveKey, "k2"), "k2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := LoadKeyring(tc.getenv)
			require.NoError(t, err)
			assert.Equal(t, tc.wantActive, k.ActiveKeyID())
			assert.Equal(t, []string{"k1", "k2"}, k.KeyIDs())
		})
	}

	for _, tc := range []struct {
		name   string
		getenv func(string) string
		want   string
	}{
		{"nothing set", env(), "no keys: set AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE"},
		{"both set", env(EnvKeys, keyring, EnvKeysFile, path), "both AUDITPROC_HMAC_KEYS and AUDITPROC_HMAC_KEYS_FILE are set"},
		{"missing file", env(EnvKeysFile, path+".missing"), "AUDITPROC_HMAC_KEYS_FILE: open " + path + ".missing"},
		{"bad inline", env(EnvKeys, "key k1 hex:zz"), `AUDITPROC_HMAC_KEYS: integrity: invalid keyring: line 1: key "k1"`},
		{"unknown active", env(EnvKeysFile, path, EnvActiveKey, "k3"), "AUDITPROC_HMAC_KEYS_FILE " + path + `: integrity: invalid keyring: active key "k3"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKeyring(tc.getenv)
			require.ErrorIs(t, err, ErrInvalidKeyring)
			assert.Contains(t, err.Error(), tc.want)
			assertNoKeyMaterial(t, err.Error(), k1, k2)
		})
	}
}

// TestKeyringNeverPrintsKeys formats a keyring every way a program might
// log it and checks that no encoding of a key appears.
func TestKeyringNeverPrintsKeys(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	k, err := NewKeyring("k1", map[string][]byte{"k1": k1, "k2": k2})
	require.NoError(t, err)

	var logged bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logged, nil))
	logger.Info("keyring_loaded", "keyring", k)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("keyring_loaded", "keyring", *k)

	outputs := map[string]string{
		"%v pointer":  fmt.Sprintf("%v", k),
		"%+v pointer": fmt.Sprintf("%+v", k),
		"%#v pointer": fmt.Sprintf("%#v", k),
		"%v value":    fmt.Sprintf("%v", *k),
		"%+v value":   fmt.Sprintf("%+v", *k),
		"%#v value":   fmt.Sprintf("%#v", *k),
		"%x value":    fmt.Sprintf("%x", *k),
		"key entries": fmt.Sprintf("%v %+v %#v %x %+v %#v", k.active, k.active, k.active, k.active, k.keys, k.keys),
		"embedded":    fmt.Sprintf("%+v %#v", holder{ring: *k, ptr: k}, holder{ring: *k, ptr: k}),
		"slog":        logged.String(),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			assertNoKeyMaterial(t, out, k1, k2)
		})
	}
	assert.Equal(t, `integrity.Keyring{active: "k1", keys: ["k1" "k2"]}`, k.String())
	assert.Equal(t, k.String(), k.GoString())
	assert.Contains(t, logged.String(), `"keyring":{"active":"k1","key_ids":["k1","k2"]}`)
	assert.Contains(t, outputs["key entries"], `integrity.key{id: "k1"}`)

	var zero Keyring
	assert.Equal(t, "integrity.Keyring{}", zero.String())
	assert.Equal(t, slog.KindGroup, zero.LogValue().Kind())
	assert.Empty(t, zero.LogValue().Group())
}

// holder is a struct as another package might embed a keyring in.
type holder struct {
	ring Keyring
	ptr  *Keyring
}

// assertNoKeyMaterial fails when out holds a key raw, in hex (either case,
// or any 8-byte run of it), in base64 or as a Go byte slice. The failure
// message names the encoding only, so a failing test does not print a key.
func assertNoKeyMaterial(t *testing.T, out string, keys ...[]byte) {
	t.Helper()
	lower := strings.ToLower(out)
	for n, key := range keys {
		h := hex.EncodeToString(key)
		for i := 0; i+16 <= len(h); i += 2 {
			require.False(t, strings.Contains(lower, h[i:i+16]), "output holds 8 bytes of key %d in hex, from byte %d", n, i/2)
		}
		for enc, form := range map[string]string{
			"raw":          string(key),
			"base64":       base64.StdEncoding.EncodeToString(key),
			"base64url":    base64.RawURLEncoding.EncodeToString(key),
			"Go byte list": fmt.Sprint(key),
		} {
			require.False(t, strings.Contains(out, form), "output holds key %d (%s)", n, enc)
		}
	}
}
