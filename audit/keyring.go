package audit

import (
	"log/slog"

	"github.com/auditproc/auditproc/internal/integrity"
)

// Environment variables read by LoadKeyring.
const (
	// EnvKeys holds the keyring inline: lines "key <id> hex:<key>" (or
	// "base64:<key>") and an optional "active <id>", ";" separating lines.
	EnvKeys = integrity.EnvKeys
	// EnvKeysFile names a file holding the keyring in the same format.
	EnvKeysFile = integrity.EnvKeysFile
	// EnvActiveKey names the signing key, overriding the keyring's active line.
	EnvActiveKey = integrity.EnvActiveKey
)

// MinKeyBytes is the shortest key a Keyring accepts.
const MinKeyBytes = integrity.MinKeyBytes

// ErrInvalidKeyring is wrapped by the errors of LoadKeyring and NewKeyring.
var ErrInvalidKeyring = integrity.ErrInvalidKeyring

// Keyring holds the HMAC keys by key id: the active key signs, every key
// verifies, so keys can rotate without downtime. It never prints its keys
// (fmt and slog show key ids only).
type Keyring struct {
	k *integrity.Keyring
}

// LoadKeyring reads the keyring from the environment through getenv
// (os.Getenv in production): EnvKeys or EnvKeysFile, exactly one of them,
// and optionally EnvActiveKey.
func LoadKeyring(getenv func(string) string) (*Keyring, error) {
	k, err := integrity.LoadKeyring(getenv)
	if err != nil {
		return nil, err
	}
	return &Keyring{k: k}, nil
}

// NewKeyring returns a keyring holding keys (key id → key of at least
// MinKeyBytes bytes) that signs with activeID. Key ids use [A-Za-z0-9._-].
func NewKeyring(activeID string, keys map[string][]byte) (*Keyring, error) {
	k, err := integrity.NewKeyring(activeID, keys)
	if err != nil {
		return nil, err
	}
	return &Keyring{k: k}, nil
}

// GenerateKey returns a new random key of MinKeyBytes bytes.
func GenerateKey() ([]byte, error) { return integrity.GenerateKey() }

// ActiveKeyID is the id of the signing key.
func (k *Keyring) ActiveKeyID() string { return k.k.ActiveKeyID() }

// KeyIDs returns every key id, sorted.
func (k *Keyring) KeyIDs() []string { return k.k.KeyIDs() }

// String shows the key ids, never the keys.
func (k *Keyring) String() string { return k.k.String() }

// LogValue shows the key ids, never the keys.
func (k *Keyring) LogValue() slog.Value { return k.k.LogValue() }
