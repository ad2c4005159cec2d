package integrity

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Envelope version 1: the stream-entry fields and their values.
const (
	// Version is the value of the v field.
	Version = "1"
	// FieldVersion holds the envelope version.
	FieldVersion = "v"
	// FieldKeyID holds the id of the signing key.
	FieldKeyID = "kid"
	// FieldEvent holds the exact event bytes: a JSON object in UTF-8.
	FieldEvent = "event"
	// FieldSig holds the lowercase hex HMAC-SHA256 of the MAC input.
	FieldSig = "sig"

	// EventIDMember and TimestampMember are the top-level members of every
	// signed event.
	EventIDMember   = "event_id"
	TimestampMember = "timestamp"

	// macLabel separates envelope MACs from any other use of the same key.
	macLabel  = "auditproc-envelope"
	sigHexLen = 2 * 32
)

// Envelope is one signed event as it travels in a stream entry.
type Envelope struct {
	// Version is the envelope version: Version (v1) or Version2. An
	// Envelope with a Source is version 2 whatever this says.
	Version string
	// KeyID is the id of the key that signed the event.
	KeyID string
	// EventID is the event's top-level event_id member.
	EventID string
	// Event is the exact signed bytes. Sign returns the caller's slice;
	// Verify returns a fresh copy the caller may keep and change.
	Event []byte
	// Sig is the lowercase hex HMAC-SHA256.
	Sig string

	// Link is the entry's place in its source's chain (version 2 only).
	Link
}

// Chained says the envelope is version 2 (it has a source).
func (e Envelope) Chained() bool { return e.Source != "" }

// EnvelopeError is the error Verify returns: Err is one of the sentinels
// (ErrMalformed, ErrUnknownKeyID, ErrSignatureMismatch, ErrUnsigned) and
// Field the stream-entry field at fault ("" when the entry as a whole is).
type EnvelopeError struct {
	Field   string
	Problem string
	Err     error
}

func (e *EnvelopeError) Error() string {
	if e.Field == "" {
		return e.Err.Error() + ": " + e.Problem
	}
	return fmt.Sprintf("%s: field %q: %s", e.Err, e.Field, e.Problem)
}

// Unwrap returns the sentinel.
func (e *EnvelopeError) Unwrap() error { return e.Err }

func malformed(field, problem string) error {
	return &EnvelopeError{Field: truncate(field), Problem: problem, Err: ErrMalformed}
}

// Sign signs event for stream with the active key. The event must be a JSON
// object that already carries a string event_id and an RFC 3339 timestamp
// (use Stamp) and names no top-level member twice; it is not copied and
// must not change afterwards.
func (k *Keyring) Sign(stream string, event []byte) (Envelope, error) {
	id, err := k.checkEvent(event)
	if err != nil {
		return Envelope{}, err
	}
	key := k.active
	st := key.pool.Get().(*macState)
	key.mac(st, stream, event)
	sig := hex.EncodeToString(st.sum[:])
	key.pool.Put(st)
	return Envelope{Version: Version, KeyID: key.id, EventID: id, Event: event, Sig: sig}, nil
}

// checkEvent runs Sign's checks of an event and returns its event id.
func (k *Keyring) checkEvent(event []byte) (string, error) {
	if len(event) == 0 || len(event) > k.maxEventBytes {
		return "", fmt.Errorf("%w: event is %d bytes, want 1 to %d", ErrInvalidEvent, len(event), k.maxEventBytes)
	}
	if !utf8.Valid(event) {
		return "", fmt.Errorf("%w: event is not valid UTF-8", ErrInvalidEvent)
	}
	view := bytesAsString(event)
	if name, dup := duplicateMember(view); dup {
		return "", fmt.Errorf("%w: top-level member %q appears twice", ErrInvalidEvent, truncate(name))
	}
	id := gjson.Get(view, EventIDMember)
	if id.Type != gjson.String || id.Str == "" {
		return "", fmt.Errorf("%w: no top-level string %q member (use Stamp)", ErrInvalidEvent, EventIDMember)
	}
	if ts := gjson.Get(view, TimestampMember); ts.Type != gjson.String || !validTimestamp(ts.Str) {
		return "", fmt.Errorf("%w: no top-level RFC 3339 %q member (use Stamp)", ErrInvalidEvent, TimestampMember)
	}
	return strings.Clone(id.Str), nil
}

// Values returns the XADD field/value list in a fixed order: v, kid, event,
// sig for version 1; v, kid, src, seq, prev, kind, event, sig for version
// 2. The event value is the Event slice itself ([]byte, which go-redis
// writes as a bulk string unchanged).
func (e Envelope) Values() []any {
	if e.Chained() {
		return []any{FieldVersion, Version2, FieldKeyID, e.KeyID, FieldSource, e.Source,
			FieldSeq, strconv.FormatUint(e.Seq, 10), FieldPrev, e.Prev, FieldKind, e.Kind,
			FieldEvent, e.Event, FieldSig, e.Sig}
	}
	return []any{FieldVersion, Version, FieldKeyID, e.KeyID, FieldEvent, e.Event, FieldSig, e.Sig}
}

// Verify checks a stream entry's values exactly as go-redis returns them
// (redis.XMessage.Values: field → string) for an entry read from stream.
// The checks run in this order, and the first failure is returned:
//
//  1. no kid and no sig field: ErrUnsigned;
//  2. fields: exactly v, kid, event and sig, all strings; v is "1"; kid is
//     a valid key id; sig is 64 lowercase hex digits; event is 1 to
//     MaxEventBytes bytes: else ErrMalformed;
//  3. kid names a key of the keyring: else ErrUnknownKeyID;
//  4. sig equals the MAC, compared in constant time: else ErrSignatureMismatch;
//  5. the event is UTF-8 with a top-level non-empty string event_id: else
//     ErrMalformed.
//
// Errors are *EnvelopeError values naming the field; none holds key material.
func (k *Keyring) Verify(stream string, values map[string]any) (Envelope, error) {
	env, err := k.VerifyView(stream, values)
	if err == nil {
		env.Event = bytes.Clone(env.Event)
	}
	return env, err
}

// VerifyView is Verify without the copy of the event: the returned
// Envelope's Event shares the memory of values' event string, so it must
// never be changed. A reader that hands events on read-only (streambus)
// saves an allocation and a copy per entry.
func (k *Keyring) VerifyView(stream string, values map[string]any) (Envelope, error) {
	_, hasKid := values[FieldKeyID]
	_, hasSig := values[FieldSig]
	if !hasKid && !hasSig {
		return Envelope{}, errUnsigned()
	}
	fields := make([]string, 0, 2*len(values))
	for _, name := range envelopeFields {
		raw, ok := values[name]
		if !ok {
			continue
		}
		s, ok := raw.(string)
		if !ok {
			return Envelope{}, malformed(name, fmt.Sprintf("value is %T, want string", raw))
		}
		fields = append(fields, name, s)
	}
	for name := range values {
		if envelopeField(name) < 0 {
			fields = append(fields, name, "")
		}
	}
	return k.VerifyFields(stream, fields)
}

// VerifyFields is VerifyView for an entry's fields as Redis sends them: a
// flat list of names and values (name, value, name, value, …), which a
// reader can take straight from the reply without building a map. The
// checks, their order and the errors are Verify's, and in addition a name
// without a value is ErrMalformed, and so is a field named twice (XADD
// allows it): readers disagree on which of two values counts (a map keeps
// the last, XRANGE shows both, a first-value reader the first), so an
// ambiguous entry is refused whatever its version and whichever value is
// signed. Only a reader that sees the field list as stored can tell; every
// read path of auditproc does. The returned Envelope's Event, Sig and
// EventID share the memory of fields' strings: never change it.
func (k *Keyring) VerifyFields(stream string, fields []string) (Envelope, error) {
	var (
		vals  [numFields]string // by envelopeField
		found [numFields]bool
		extra bool
	)
	for i := 0; i < len(fields); i += 2 {
		f := envelopeField(fields[i])
		if f < 0 {
			extra = true
			continue
		}
		if found[f] {
			return Envelope{}, malformed(fields[i], "named twice: an entry must name each field once")
		}
		found[f] = true
		if i+1 < len(fields) {
			vals[f] = fields[i+1]
		}
	}
	if !found[fKid] && !found[fSig] {
		return Envelope{}, errUnsigned()
	}
	// The version decides the field set; an unknown one is reported by
	// verifyEnvelope once the common fields are known to be there.
	want := envelopeFields[:4]
	chained := found[fVersion] && vals[fVersion] == Version2
	if chained {
		want = envelopeFields[:]
	}
	for _, name := range want {
		if !found[envelopeField(name)] {
			return Envelope{}, malformed(name, "missing")
		}
	}
	if len(fields)%2 != 0 {
		return Envelope{}, malformed(fields[len(fields)-1], "no value")
	}
	if extra || !chained && (found[fSource] || found[fSeq] || found[fPrev] || found[fKind]) {
		names := make([]string, 0, len(fields)/2)
		for i := 0; i < len(fields); i += 2 {
			names = append(names, fields[i])
		}
		return Envelope{}, extraFields(names, chained)
	}
	if chained {
		return k.verifyChained(stream, vals)
	}
	return k.verifyEnvelope(stream, vals[fVersion], vals[fKid], vals[fEvent], vals[fSig])
}

// envelopeFields are the envelope's fields in the order Verify reports a
// missing one: version 1's four, then version 2's own.
var envelopeFields = [numFields]string{FieldVersion, FieldKeyID, FieldEvent, FieldSig, FieldSource, FieldSeq, FieldPrev, FieldKind}

// Indexes into envelopeFields.
const (
	fVersion = iota
	fKid
	fEvent
	fSig
	fSource
	fSeq
	fPrev
	fKind
	numFields
)

// envelopeField returns name's index in envelopeFields, -1 for any other name.
func envelopeField(name string) int {
	switch name {
	case FieldVersion:
		return fVersion
	case FieldKeyID:
		return fKid
	case FieldEvent:
		return fEvent
	case FieldSig:
		return fSig
	case FieldSource:
		return fSource
	case FieldSeq:
		return fSeq
	case FieldPrev:
		return fPrev
	case FieldKind:
		return fKind
	}
	return -1
}

func errUnsigned() error {
	return &EnvelopeError{Problem: "no kid and no sig field", Err: ErrUnsigned}
}

// verifyEnvelope runs Verify's checks 2 (values) to 5 on an envelope whose
// four fields, and only those, are present. The Envelope's KeyID is the
// keyring's own string; Event, Sig and EventID share event's and sig's
// memory.
func (k *Keyring) verifyEnvelope(stream, v, kid, event, sig string) (Envelope, error) {
	if v != Version {
		return Envelope{}, malformed(FieldVersion, fmt.Sprintf("unsupported version %q, want %q or %q", truncate(v), Version, Version2))
	}
	return k.verifyCore(stream, kid, event, sig, nil)
}

// verifyCore checks kid, sig and event, then the MAC (of version 1, or of
// version 2 with link when link is not nil), then the event id.
func (k *Keyring) verifyCore(stream, kid, event, sig string, link *Link) (Envelope, error) {
	if !validKeyID(kid) {
		return Envelope{}, malformed(FieldKeyID, fmt.Sprintf("want 1-%d characters of [A-Za-z0-9._-]", MaxKeyIDLen))
	}
	if !isLowerHex(sig) {
		return Envelope{}, malformed(FieldSig, fmt.Sprintf("want %d lowercase hex digits", sigHexLen))
	}
	if len(event) == 0 || len(event) > k.maxEventBytes {
		return Envelope{}, malformed(FieldEvent, fmt.Sprintf("%d bytes, want 1 to %d", len(event), k.maxEventBytes))
	}
	key, ok := k.keys[kid]
	if !ok {
		return Envelope{}, &EnvelopeError{Field: FieldKeyID, Problem: fmt.Sprintf("no key %q in the keyring", kid), Err: ErrUnknownKeyID}
	}
	st := key.pool.Get().(*macState)
	// sig is known to be 64 hex digits, so decoding cannot fail.
	_, _ = hex.Decode(st.sig[:], stringAsBytes(sig))
	if link != nil {
		key.mac2(st, stream, link, stringAsBytes(event))
	} else {
		key.mac(st, stream, stringAsBytes(event))
	}
	equal := hmac.Equal(st.sum[:], st.sig[:])
	key.pool.Put(st)
	if !equal {
		return Envelope{}, &EnvelopeError{Field: FieldSig, Problem: "not the MAC of this entry in this stream", Err: ErrSignatureMismatch}
	}
	if !utf8.ValidString(event) {
		return Envelope{}, malformed(FieldEvent, "not valid UTF-8")
	}
	id := gjson.Get(event, EventIDMember)
	if id.Type != gjson.String || id.Str == "" {
		return Envelope{}, malformed(FieldEvent, "no top-level non-empty string event_id member")
	}
	env := Envelope{Version: Version, KeyID: key.id, EventID: id.Str, Event: stringAsBytes(event), Sig: sig}
	if link != nil {
		env.Version, env.Link = Version2, *link
	}
	return env, nil
}

// mac computes the envelope MAC into st.sum:
// HMAC-SHA256(key, LP(label) LP(version) LP(kid) LP(stream) LP(event)),
// LP(x) being x's length as 4 bytes big endian followed by x.
func (e *keyEntry) mac(st *macState, stream string, event []byte) {
	st.h.Reset()
	st.h.Write(e.prefix)
	st.writeLP(stringAsBytes(stream))
	st.writeLP(event)
	st.h.Sum(st.sum[:0])
}

func (st *macState) writeLP(b []byte) {
	binary.BigEndian.PutUint32(st.lenBuf[:], uint32(len(b)))
	st.h.Write(st.lenBuf[:])
	st.h.Write(b)
}

func appendLP(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// extraFields reports the fields of an envelope beyond those of its
// version (at most three, sorted, so that the message is stable). names are
// all the entry's field names.
func extraFields(names []string, chained bool) error {
	var extra []string
	for _, name := range names {
		if f := envelopeField(name); f < 0 || !chained && f >= fSource {
			extra = append(extra, truncate(name))
		}
	}
	if chained {
		slices.Sort(extra)
		return &EnvelopeError{Field: extra[0], Problem: fmt.Sprintf("unexpected field(s) %q; envelope v2 has only v, kid, src, seq, prev, kind, event, sig", extra[:min(3, len(extra))]), Err: ErrMalformed}
	}
	slices.Sort(extra)
	first := extra[0]
	if len(extra) > 3 {
		extra = extra[:3]
	}
	return &EnvelopeError{Field: first, Problem: fmt.Sprintf("unexpected field(s) %q; envelope v1 has only v, kid, event, sig", extra), Err: ErrMalformed}
}

func isLowerHex(s string) bool {
	if len(s) != sigHexLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// stringAsBytes views s as bytes without copying; the hasher only reads it.
func stringAsBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// bytesAsString views b as a string without copying, for lookups that do
// not keep the result.
func bytesAsString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func validTimestamp(s string) bool {
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}
