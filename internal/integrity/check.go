package integrity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Rules CheckEvent applies, in the order it applies them. EventError.Rule
// is one of them, so that a tool can say which rule a line broke.
const (
	RuleSize      = "size"             // the stamped event fits the limit (1 MiB by default)
	RuleJSON      = "json"             // valid JSON (RFC 8259)
	RuleUTF8      = "utf8"             // valid UTF-8
	RuleObject    = "object"           // a JSON object at the top
	RuleDuplicate = "duplicate_member" // no top-level member named twice (parsers disagree on which wins)
	RuleEventID   = "event_id"         // event_id, when present, is a non-empty string
	RuleTimestamp = "timestamp"        // timestamp, when present, is an RFC 3339 string
)

// GeneratedIDLen is the length of an event id Stamp generates (a UUID).
const GeneratedIDLen = 36

// EventError is the error CheckEvent (and so Stamp, and every producer
// path) returns for an event that cannot be signed: Rule names the rule it
// broke. It wraps ErrInvalidEvent.
type EventError struct {
	Rule    string
	Problem string
}

func (e *EventError) Error() string { return ErrInvalidEvent.Error() + ": " + e.Problem }

// Unwrap returns ErrInvalidEvent.
func (e *EventError) Unwrap() error { return ErrInvalidEvent }

func eventError(rule, format string, args ...any) error {
	return &EventError{Rule: rule, Problem: fmt.Sprintf(format, args...)}
}

// EventInfo is what CheckEvent learned about an event, for AppendStamped.
type EventInfo struct {
	// Open is the offset of the object's opening "{".
	Open int
	// Empty: the object has no member.
	Empty bool
	// ID is the event's own event_id ("" when it has none). It shares the
	// event's memory.
	ID string
	// HasTimestamp: the event has its own timestamp member.
	HasTimestamp bool
}

// StampedLen is the length of the event once AppendStamped added what is
// missing, with an id of idLen bytes.
func (in EventInfo) StampedLen(eventLen, idLen int) int {
	n := eventLen
	if in.ID == "" {
		n += len(`"`+EventIDMember+`":"",`) + idLen
	}
	if !in.HasTimestamp {
		n += len(`"`+TimestampMember+`":"",`) + len(TimestampLayout)
	}
	if in.Empty && n > eventLen {
		n-- // no member follows the last inserted one: no comma
	}
	return n
}

// CheckEvent applies every rule that signing applies to event, without
// allocating (unless a name, event_id or timestamp holds an escape): it
// fits maxBytes once stamped with a generated id (maxBytes ≤ 0: no limit),
// it is valid JSON and UTF-8, it is an object, its event_id (when present)
// is a non-empty string and its timestamp (when present) an RFC 3339
// string, each given at most once. An event that passes is signed by
// Stamp, AppendStamped and Sign without error. Errors are *EventError
// values naming the rule.
func CheckEvent(event []byte, maxBytes int) (EventInfo, error) {
	var info EventInfo
	if maxBytes > 0 && len(event) > maxBytes {
		return info, eventError(RuleSize, "the event is %d bytes, more than the limit of %s", len(event), SizeName(maxBytes))
	}
	view := bytesAsString(event)
	if !gjson.Valid(view) {
		return info, eventError(RuleJSON, "not valid JSON")
	}
	if !utf8.Valid(event) {
		return info, eventError(RuleUTF8, "not valid UTF-8")
	}
	info.Open = skipSpace(event)
	if info.Open >= len(event) || event[info.Open] != '{' {
		return info, eventError(RuleObject, "not a JSON object")
	}
	m, err := checkMembers(event, info.Open)
	info.Empty, info.ID, info.HasTimestamp = m.empty, m.id, m.hasTimestamp
	if err != nil {
		return info, err
	}
	if n := info.StampedLen(len(event), GeneratedIDLen); maxBytes > 0 && n > maxBytes {
		return info, eventError(RuleSize, "the event is %d bytes once %s and %s are added, more than the limit of %s",
			n, EventIDMember, TimestampMember, SizeName(maxBytes))
	}
	return info, nil
}

// members is what CheckEvent learns from an event's top-level members.
type members struct {
	empty        bool
	id           string
	hasTimestamp bool
}

// checkMembers applies the member rules (no duplicate, event_id and
// timestamp) to event, valid JSON and UTF-8 whose object opens at open.
// It scans the members itself, comparing names as written; a name, or an
// event_id or timestamp value, with an escape in it sends the event to
// checkMembersParsed, which decodes them.
func checkMembers(event []byte, open int) (members, error) {
	m := members{empty: true}
	idOK, tsOK := true, true
	var names memberNames
	for i := skipSpace(event[open+1:]) + open + 1; event[i] != '}'; {
		m.empty = false
		keyEnd := stringEnd(event, i)
		key := event[i+1 : keyEnd-1]
		i = keyEnd + skipSpace(event[keyEnd:]) + 1 // past the ':'
		i += skipSpace(event[i:])
		valueEnd := valueEnd(event, i)
		value := event[i:valueEnd]
		i = valueEnd + skipSpace(event[valueEnd:])
		if event[i] == ',' {
			i++
			i += skipSpace(event[i:])
		}
		name := bytesAsString(key)
		if hasEscape(key) {
			return checkMembersParsed(bytesAsString(event))
		}
		if names.add(name) {
			return m, eventError(RuleDuplicate, "top-level member %q appears twice", truncate(name))
		}
		switch name {
		case EventIDMember, TimestampMember:
			isString := value[0] == '"'
			var str []byte
			if isString {
				str = value[1 : len(value)-1]
				if hasEscape(str) {
					return checkMembersParsed(bytesAsString(event))
				}
			}
			if name == EventIDMember {
				m.id = bytesAsString(str)
				idOK = isString && len(str) > 0
			} else {
				m.hasTimestamp = true
				tsOK = isString && validTimestamp(bytesAsString(str))
			}
		}
	}
	return m, memberRules(idOK, tsOK)
}

// memberRules returns the error of an event whose event_id or timestamp
// broke its rule.
func memberRules(idOK, tsOK bool) error {
	switch {
	case !idOK:
		return eventError(RuleEventID, "%q must be a non-empty string", EventIDMember)
	case !tsOK:
		return eventError(RuleTimestamp, "%q must be an RFC 3339 string", TimestampMember)
	}
	return nil
}

// checkMembersParsed is checkMembers through gjson's parser, which decodes
// escaped names and values.
func checkMembersParsed(event string) (members, error) {
	m := members{empty: true}
	idOK, tsOK := true, true
	var (
		names memberNames
		dup   string
		found bool
	)
	gjson.Parse(event).ForEach(func(key, value gjson.Result) bool {
		m.empty = false
		if names.add(key.Str) {
			dup, found = key.Str, true
			return false
		}
		switch key.Str {
		case EventIDMember:
			m.id = value.Str
			idOK = value.Type == gjson.String && value.Str != ""
		case TimestampMember:
			m.hasTimestamp = true
			tsOK = value.Type == gjson.String && validTimestamp(value.Str)
		}
		return true
	})
	if found {
		return m, eventError(RuleDuplicate, "top-level member %q appears twice", truncate(dup))
	}
	return m, memberRules(idOK, tsOK)
}

// stringEnd returns the offset just past the JSON string that opens at i
// (valid JSON).
func stringEnd(b []byte, i int) int {
	for i++; ; {
		j := i + bytes.IndexByte(b[i:], '"')
		k := j // an odd run of backslashes before the quote escapes it
		for k > i && b[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j + 1
		}
		i = j + 1
	}
}

// valueEnd returns the offset just past the JSON value that starts at i
// (valid JSON).
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

func hasEscape(b []byte) bool { return bytes.IndexByte(b, '\\') >= 0 }

// CheckEvent is the package's CheckEvent with the keyring's event size
// limit.
func (k *Keyring) CheckEvent(event []byte) (EventInfo, error) {
	return CheckEvent(event, k.maxEventBytes)
}

// SizeName says n bytes as an error message does: "1 MiB (1048576 bytes)"
// for the default limit.
func SizeName(n int) string {
	if n == DefaultMaxEventBytes {
		return fmt.Sprintf("1 MiB (%d bytes)", n)
	}
	return fmt.Sprintf("%d bytes", n)
}

func skipSpace(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// AppendStamped appends to dst the event checked by CheckEvent (info is
// what it returned) with the members it lacks inserted right after the
// opening "{": event_id set to id (which must be a JSON string body needing
// no escapes, such as a UUID) and timestamp set to now in TimestampLayout.
// The producer's bytes are otherwise unchanged.
func AppendStamped(dst, event []byte, info EventInfo, id string, now time.Time) []byte {
	dst = append(dst, event[:info.Open+1]...)
	if info.ID != "" && info.HasTimestamp {
		return append(dst, event[info.Open+1:]...)
	}
	if info.ID == "" {
		dst = append(dst, `"`+EventIDMember+`":"`...)
		dst = append(dst, id...)
		dst = append(dst, '"')
		if !info.HasTimestamp || !info.Empty {
			dst = append(dst, ',')
		}
	}
	if !info.HasTimestamp {
		dst = append(dst, `"`+TimestampMember+`":"`...)
		dst = appendTimestamp(dst, now)
		dst = append(dst, '"')
		if !info.Empty {
			dst = append(dst, ',')
		}
	}
	return append(dst, event[info.Open+1:]...)
}

// appendTimestamp appends t in TimestampLayout, as t.UTC().AppendFormat
// does, in a tenth of its time: every event of a producer is stamped.
func appendTimestamp(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, TimestampLayout)
	}
	hour, minute, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	dst = append(dst, '.')
	dst = appendDigits(dst, t.Nanosecond(), 9)
	return append(dst, 'Z')
}

// appendDigits appends n, 0 ≤ n < 10^width, in width decimal digits.
func appendDigits(dst []byte, n, width int) []byte {
	dst = append(dst, make([]byte, width)...)
	for i := len(dst) - 1; i >= len(dst)-width; i-- {
		dst[i] = byte('0' + n%10)
		n /= 10
	}
	return dst
}

// AppendSig appends to dst the lowercase hex signature of a stamped event
// for stream under the active key, and returns it with the key id. The
// event must have passed CheckEvent and AppendStamped (Sign checks it
// again; this does not): it is the producers' fast path.
func (k *Keyring) AppendSig(dst []byte, stream string, stamped []byte) ([]byte, string) {
	key := k.active
	st := key.pool.Get().(*macState)
	key.mac(st, stream, stamped)
	dst = hex.AppendEncode(dst, st.sum[:])
	key.pool.Put(st)
	return dst, key.id
}

// DerivedEventID returns a UUID (version 8, RFC 9562) derived from a
// producer's name and a sequence number, so that a producer that sends the
// same sequence again (a re-run of the same file) gives every event the
// same id.
func DerivedEventID(producer string, seq uint64) string {
	var buf [128]byte
	u := sha256.Sum256(binary.BigEndian.AppendUint64(append(buf[:0], producer...), seq))
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return formatUUID(u[:16])
}

// NewEventID returns a new UUIDv7 event id taken from now, as Stamp does.
func NewEventID(now time.Time) string { return newEventID(now) }

func formatUUID(u []byte) string {
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
	return string(s[:])
}

// StampedOverhead is how many bytes AppendStamped adds at most to an event
// that has neither event_id nor timestamp, with a generated id.
func StampedOverhead() int { return EventInfo{}.StampedLen(0, GeneratedIDLen) }
