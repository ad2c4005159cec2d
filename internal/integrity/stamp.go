package integrity

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// TimestampLayout is how Stamp writes the timestamp member: RFC 3339 in
// UTC with nanoseconds, fixed width so that timestamps sort as text.
const TimestampLayout = "2006-01-02T15:04:05.000000000Z"

// Stamp returns event with the top-level members event_id and timestamp
// inserted right after the opening "{" when missing, and the event id. The
// producer's bytes are otherwise unchanged. event must be a JSON object; an
// event_id it already has must be a non-empty string and a timestamp an RFC
// 3339 string. A new event id is a UUIDv7 (RFC 9562) taken from now with
// sub-millisecond precision and random bits from crypto/rand, so ids sort by
// creation time; a new timestamp is now in TimestampLayout.
func Stamp(event []byte, now time.Time) ([]byte, string, error) {
	if !json.Valid(event) {
		return nil, "", fmt.Errorf("%w: not valid JSON", ErrInvalidEvent)
	}
	if !utf8.Valid(event) {
		return nil, "", fmt.Errorf("%w: not valid UTF-8", ErrInvalidEvent)
	}
	open := bytes.IndexByte(event, '{')
	if open < 0 || len(bytes.TrimSpace(event[:open])) != 0 {
		return nil, "", fmt.Errorf("%w: not a JSON object", ErrInvalidEvent)
	}
	if name, dup := duplicateMember(bytesAsString(event)); dup {
		return nil, "", fmt.Errorf("%w: top-level member %q appears twice", ErrInvalidEvent, truncate(name))
	}
	res := gjson.GetManyBytes(event, EventIDMember, TimestampMember)
	id, ts := res[0], res[1]
	if id.Exists() && (id.Type != gjson.String || id.Str == "") {
		return nil, "", fmt.Errorf("%w: %q must be a non-empty string", ErrInvalidEvent, EventIDMember)
	}
	if ts.Exists() {
		if _, err := time.Parse(time.RFC3339Nano, ts.Str); ts.Type != gjson.String || err != nil {
			return nil, "", fmt.Errorf("%w: %q must be an RFC 3339 string", ErrInvalidEvent, TimestampMember)
		}
	}
	if id.Exists() && ts.Exists() {
		return event, id.Str, nil
	}
	var ins []byte
	eventID := id.Str
	if !id.Exists() {
		eventID = newEventID(now)
		ins = append(ins, `"`+EventIDMember+`":"`...)
		ins = append(ins, eventID...)
		ins = append(ins, `",`...)
	}
	if !ts.Exists() {
		ins = append(ins, `"`+TimestampMember+`":"`...)
		ins = now.UTC().AppendFormat(ins, TimestampLayout)
		ins = append(ins, `",`...)
	}
	rest := event[open+1:]
	if bytes.TrimSpace(rest)[0] == '}' {
		ins = ins[:len(ins)-1] // empty object: no member follows
	}
	out := make([]byte, 0, len(event)+len(ins))
	out = append(out, event[:open+1]...)
	out = append(out, ins...)
	out = append(out, rest...)
	return out, eventID, nil
}

// newEventID returns a UUIDv7 string: 48 bits of Unix milliseconds, the
// version, 12 bits of sub-millisecond time (RFC 9562 section 6.2, method 3),
// the variant and 62 random bits.
func newEventID(now time.Time) string {
	var u [16]byte
	_, _ = rand.Read(u[8:]) // never fails since Go 1.24
	ns := now.UnixNano()
	ms := ns / int64(time.Millisecond)
	subMS := uint16((ns%int64(time.Millisecond))*4096/int64(time.Millisecond)) & 0x0fff
	binary.BigEndian.PutUint64(u[0:8], uint64(ms)<<16)
	binary.BigEndian.PutUint16(u[6:8], 0x7000|subMS)
	u[8] = u[8]&0x3f | 0x80
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

// duplicateMember returns the first top-level member name of the JSON
// object event that appears twice (compared after unescaping, so "a" and
// "\u0061" are one name), and whether there is one. JSON parsers disagree on
// which of two members wins, so a signed event must not hold one twice.
func duplicateMember(event string) (string, bool) {
	var (
		small [16]string
		names = small[:0]
		seen  map[string]struct{}
		dup   string
		found bool
	)
	obj := gjson.Parse(event)
	if !obj.IsObject() {
		return "", false
	}
	obj.ForEach(func(key, _ gjson.Result) bool {
		if seen == nil && len(names) < len(small) {
			if slices.Contains(names, key.Str) {
				dup, found = key.Str, true
				return false
			}
			names = append(names, key.Str)
			return true
		}
		if seen == nil {
			seen = make(map[string]struct{}, 2*len(names))
			for _, n := range names {
				seen[n] = struct{}{}
			}
		}
		if _, ok := seen[key.Str]; ok {
			dup, found = key.Str, true
			return false
		}
		seen[key.Str] = struct{}{}
		return true
	})
	return dup, found
}
