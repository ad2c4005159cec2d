// Package integrity implements auditproc's signed envelope, version 1: the
// stream-entry fields a producer writes with XADD, the HMAC-SHA256 that binds
// them to a key id and a stream, and the keyring that signs and verifies.
//
// The envelope is specified in docs/envelope.md; testdata/vectors.json holds
// its test vectors. A producer stamps its event (Stamp adds the event id and
// timestamp when missing), signs it for a stream (Keyring.Sign) and appends
// Envelope.Values with XADD. A consumer passes each entry's values to
// Keyring.Verify, which answers in constant time with respect to the MAC and
// wraps one of ErrSignatureMismatch, ErrUnknownKeyID, ErrMalformed or
// ErrUnsigned; Reason turns that into a label for logs and metrics.
//
// Key material never leaves a Keyring: it is not part of any error text, and a
// Keyring prints (fmt, slog) as its key ids only.
package integrity
