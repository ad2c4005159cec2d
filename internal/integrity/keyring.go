package integrity

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
)

// Environment variables read by LoadKeyring.
const (
	// EnvKeys holds a keyring inline, in the keyring format (docs/envelope.md);
	// ";" may stand for a line break.
	EnvKeys = "AUDITPROC_HMAC_KEYS"
	// EnvKeysFile names a file in the keyring format.
	EnvKeysFile = "AUDITPROC_HMAC_KEYS_FILE"
	// EnvActiveKey names the key used for signing; it overrides the
	// keyring's own "active" line.
	EnvActiveKey = "AUDITPROC_HMAC_ACTIVE_KEY"
)

const (
	// MinKeyBytes is the shortest HMAC key a keyring accepts.
	MinKeyBytes = 32
	// MaxKeyIDLen is the longest key id; key ids use [A-Za-z0-9._-].
	MaxKeyIDLen = 64
	// DefaultMaxEventBytes is the largest event Sign and Verify accept
	// unless Keyring.WithMaxEventBytes says otherwise (1 MiB).
	DefaultMaxEventBytes = 1 << 20
)

// Keyring holds HMAC keys by key id: one active key signs, every key
// verifies, so keys rotate without downtime (add the new key everywhere,
// then make it active, then drop the old one once its entries are consumed).
//
// A Keyring is immutable and safe for concurrent use. It never prints its
// keys: String, GoString, Format and LogValue show the key ids only.
type Keyring struct {
	active        *keyEntry
	keys          map[string]*keyEntry
	maxEventBytes int
}

// keyEntry is one key with its pool of keyed HMAC-SHA256 hashers.
type keyEntry struct {
	id     string
	secret []byte
	// prefix is the start of the MAC input that depends on the key id only:
	// LP(label) LP(version) LP(kid); prefix2 is version 2's.
	prefix, prefix2 []byte
	pool            sync.Pool // of *macState
}

// Format prints the key id only, whatever the verb, so that formatting a
// *keyEntry cannot reveal the key. (Elsewhere fmt meets keyEntry only behind
// a pointer inside another value, which it prints as an address.)
func (e *keyEntry) Format(f fmt.State, _ rune) { _, _ = fmt.Fprintf(f, "integrity.key{id: %q}", e.id) }

// macState is a pooled keyed hasher with scratch space, so that a MAC costs
// no allocation.
type macState struct {
	h      hash.Hash
	lenBuf [4]byte
	sum    [sha256.Size]byte
	sig    [sha256.Size]byte
}

func newKeyEntry(id string, key []byte) *keyEntry {
	e := &keyEntry{id: id, secret: bytes.Clone(key)}
	e.prefix = appendLP(e.prefix, macLabel)
	e.prefix = appendLP(e.prefix, Version)
	e.prefix = appendLP(e.prefix, id)
	e.prefix2 = appendLP(appendLP(appendLP(nil, macLabel), Version2), id)
	e.pool.New = func() any { return &macState{h: hmac.New(sha256.New, e.secret)} }
	return e
}

// NewKeyring returns a keyring holding keys (key id → key, each at least
// MinKeyBytes long) that signs with activeID. The keys are copied.
func NewKeyring(activeID string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrInvalidKeyring)
	}
	k := &Keyring{keys: make(map[string]*keyEntry, len(keys)), maxEventBytes: DefaultMaxEventBytes}
	for id, key := range keys {
		if !validKeyID(id) {
			return nil, fmt.Errorf("%w: key id %q: want 1-%d characters of [A-Za-z0-9._-]", ErrInvalidKeyring, truncate(id), MaxKeyIDLen)
		}
		if len(key) < MinKeyBytes {
			return nil, fmt.Errorf("%w: key %q is %d bytes, want at least %d (generate one with GenerateKey)", ErrInvalidKeyring, id, len(key), MinKeyBytes)
		}
		k.keys[id] = newKeyEntry(id, key)
	}
	active, ok := k.keys[activeID]
	if !ok {
		return nil, fmt.Errorf("%w: active key %q is not in the keyring (key ids: %s)", ErrInvalidKeyring, truncate(activeID), strings.Join(k.KeyIDs(), ", "))
	}
	k.active = active
	return k, nil
}

// WithMaxEventBytes returns a keyring sharing k's keys whose Sign and Verify
// accept events of up to n bytes (n ≤ 0 means DefaultMaxEventBytes).
func (k *Keyring) WithMaxEventBytes(n int) *Keyring {
	if n <= 0 {
		n = DefaultMaxEventBytes
	}
	c := *k
	c.maxEventBytes = n
	return &c
}

// MaxEventBytes reports the largest event Sign and Verify accept.
func (k *Keyring) MaxEventBytes() int { return k.maxEventBytes }

// ActiveKeyID returns the id of the key that signs.
func (k *Keyring) ActiveKeyID() string { return k.active.id }

// KeyIDs returns every key id, sorted.
func (k *Keyring) KeyIDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// String describes the keyring by its key ids; it never shows key material.
func (k Keyring) String() string {
	if k.active == nil {
		return "integrity.Keyring{}"
	}
	return fmt.Sprintf("integrity.Keyring{active: %q, keys: %q}", k.active.id, k.KeyIDs())
}

// GoString is String, so that %#v does not reveal key material either.
func (k Keyring) GoString() string { return k.String() }

// LogValue implements slog.LogValuer: the active key id and all key ids.
func (k Keyring) LogValue() slog.Value {
	if k.active == nil {
		return slog.GroupValue()
	}
	return slog.GroupValue(slog.String("active", k.active.id), slog.Any("key_ids", k.KeyIDs()))
}

// GenerateKey returns a new random key of MinKeyBytes bytes from crypto/rand.
func GenerateKey() ([]byte, error) {
	key := make([]byte, MinKeyBytes)
	// crypto/rand.Read never fails since Go 1.24: on a broken entropy source
	// it crashes the program instead of returning an error.
	_, _ = rand.Read(key)
	return key, nil
}

// FormatKeyLine returns the keyring-format line declaring key under id,
// "key <id> hex:<key in hex>". The line is secret: write it to a protected
// file, never to a log.
func FormatKeyLine(id string, key []byte) string {
	return "key " + id + " hex:" + hex.EncodeToString(key)
}

// ParseKeyring parses the keyring format documented in docs/envelope.md:
//
//	# comment
//	active 2026-07
//	key 2026-01 hex:<64 or more hex digits>
//	key 2026-07 base64:<standard base64 of 32 or more bytes>
//
// Lines are separated by "\n" or ";". The active line may be omitted when the
// keyring holds one key. Errors name the line, never its key material.
func ParseKeyring(data []byte) (*Keyring, error) {
	active, keys, err := parseKeyLines(string(data))
	if err != nil {
		return nil, err
	}
	return newParsedKeyring(active, keys)
}

func newParsedKeyring(active string, keys map[string][]byte) (*Keyring, error) {
	if active == "" && len(keys) == 1 {
		for id := range keys {
			active = id
		}
	}
	if active == "" && len(keys) > 1 {
		return nil, fmt.Errorf("%w: %d keys but no active key: add an \"active <key id>\" line or set %s", ErrInvalidKeyring, len(keys), EnvActiveKey)
	}
	return NewKeyring(active, keys)
}

func parseKeyLines(text string) (active string, keys map[string][]byte, err error) {
	keys = make(map[string][]byte)
	for n := 1; text != ""; n++ {
		line := text
		if i := strings.IndexAny(text, "\n;"); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		where := fmt.Sprintf("line %d", n)
		switch {
		case fields[0] == "active" && len(fields) == 2:
			if active != "" {
				return "", nil, fmt.Errorf("%w: %s: second active line", ErrInvalidKeyring, where)
			}
			active = fields[1]
		case fields[0] == "key" && len(fields) == 3:
			id := fields[1]
			if _, dup := keys[id]; dup {
				return "", nil, fmt.Errorf("%w: %s: key %q declared twice", ErrInvalidKeyring, where, truncate(id))
			}
			key, ok := decodeKey(fields[2])
			if !ok {
				return "", nil, fmt.Errorf("%w: %s: key %q: want hex:<hex digits> or base64:<standard base64>", ErrInvalidKeyring, where, truncate(id))
			}
			keys[id] = key
		default:
			// The line may hold key material: describe it by its shape only.
			return "", nil, fmt.Errorf("%w: %s: want \"key <id> hex:<key>\", \"key <id> base64:<key>\" or \"active <id>\" (%d words)", ErrInvalidKeyring, where, len(fields))
		}
	}
	return active, keys, nil
}

// decodeKey decodes "hex:…" or "base64:…". It reports only success, because
// the decoders' own errors quote the offending input byte.
func decodeKey(s string) ([]byte, bool) {
	if v, ok := strings.CutPrefix(s, "hex:"); ok {
		b, err := hex.DecodeString(v)
		return b, err == nil
	}
	if v, ok := strings.CutPrefix(s, "base64:"); ok {
		b, err := base64.StdEncoding.DecodeString(v)
		return b, err == nil
	}
	return nil, false
}

// LoadKeyring builds the keyring from the environment, read through getenv
// (os.Getenv in production):
//
//   - AUDITPROC_HMAC_KEYS: the keyring inline, ";" separating lines, or
//   - AUDITPROC_HMAC_KEYS_FILE: the path of a keyring file;
//   - AUDITPROC_HMAC_ACTIVE_KEY (optional): the signing key id, overriding
//     the keyring's active line.
//
// Exactly one of the first two must be set.
func LoadKeyring(getenv func(string) string) (*Keyring, error) {
	inline, path := getenv(EnvKeys), getenv(EnvKeysFile)
	var (
		text   string
		source string
	)
	switch {
	case inline != "" && path != "":
		return nil, fmt.Errorf("%w: both %s and %s are set: set only one", ErrInvalidKeyring, EnvKeys, EnvKeysFile)
	case inline != "":
		text, source = inline, EnvKeys
	case path != "":
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o022 != 0 {
			return nil, fmt.Errorf("%w: %s %s is writable by group or others (mode %04o): anyone who can change it can make this process trust their key; chmod go-w %s",
				ErrInvalidKeyring, EnvKeysFile, path, fi.Mode().Perm(), path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidKeyring, EnvKeysFile, err)
		}
		text, source = string(data), fmt.Sprintf("%s %s", EnvKeysFile, path)
	default:
		return nil, fmt.Errorf("%w: no keys: set %s or %s", ErrInvalidKeyring, EnvKeys, EnvKeysFile)
	}
	active, keys, err := parseKeyLines(text)
	if err == nil {
		if a := getenv(EnvActiveKey); a != "" {
			active = a
		}
		var k *Keyring
		if k, err = newParsedKeyring(active, keys); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", source, err)
}

// KeyringFileWarning returns a warning when the keyring file named by
// EnvKeysFile is readable by group or others (a key readable by anyone but
// the producers and auditproc can forge entries), "" otherwise. A file
// writable by them is refused by LoadKeyring.
func KeyringFileWarning(getenv func(string) string) string {
	path := getenv(EnvKeysFile)
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o044 == 0 {
		return ""
	}
	return fmt.Sprintf("%s %s is readable by group or others (mode %04o): whoever reads it can sign entries; chmod go-r %s unless it is a mounted secret only this process sees",
		EnvKeysFile, path, fi.Mode().Perm(), path)
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// truncate shortens a user-supplied name for an error message.
func truncate(s string) string {
	if len(s) > MaxKeyIDLen {
		return s[:MaxKeyIDLen] + "…"
	}
	return s
}
