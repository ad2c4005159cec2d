package integrity

import "errors"

// Errors returned by Verify. Each error Verify returns wraps exactly one of
// them and names the offending field; none ever contains key material.
var (
	// ErrSignatureMismatch: the sig field is well formed but is not the MAC of
	// the entry under the named key (tampered event, other stream, other key).
	ErrSignatureMismatch = errors.New("integrity: signature mismatch")
	// ErrUnknownKeyID: the kid field names a key the keyring does not hold.
	ErrUnknownKeyID = errors.New("integrity: unknown key id")
	// ErrMalformed: a field is missing, extra, oversized, badly encoded, or
	// the signed event lacks a string event_id.
	ErrMalformed = errors.New("integrity: malformed envelope")
	// ErrUnsigned: the entry has neither a kid nor a sig field, for example
	// an event written with a raw XADD.
	ErrUnsigned = errors.New("integrity: unsigned entry")
)

// Errors returned on the producer side and when loading keys.
var (
	// ErrInvalidEvent: the event given to Stamp or Sign is not a JSON object
	// with a usable event_id and timestamp, or is too large.
	ErrInvalidEvent = errors.New("integrity: invalid event")
	// ErrInvalidKeyring: keys or the keyring configuration are unusable.
	ErrInvalidKeyring = errors.New("integrity: invalid keyring")
)

// Reason maps an error from Verify to a stable snake_case label for logs and
// metrics: "signature_mismatch", "unknown_key_id", "malformed_envelope",
// "unsigned"; "" for nil; "other" for anything else.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrSignatureMismatch):
		return "signature_mismatch"
	case errors.Is(err, ErrUnknownKeyID):
		return "unknown_key_id"
	case errors.Is(err, ErrMalformed):
		return "malformed_envelope"
	case errors.Is(err, ErrUnsigned):
		return "unsigned"
	default:
		return "other"
	}
}
