package integrity

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"time"

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
	info, err := CheckEvent(event, 0)
	if err != nil {
		return nil, "", err
	}
	if info.ID != "" && info.HasTimestamp {
		return event, info.ID, nil
	}
	id := info.ID
	if id == "" {
		id = newEventID(now)
	}
	out := make([]byte, 0, info.StampedLen(len(event), len(id)))
	return AppendStamped(out, event, info, id, now), id, nil
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
	return formatUUID(u[:])
}

// duplicateMember returns the first top-level member name of the JSON
// object event that appears twice (compared after unescaping, so "a" and
// "\u0061" are one name), and whether there is one. JSON parsers disagree on
// which of two members wins, so a signed event must not hold one twice.
func duplicateMember(event string) (string, bool) {
	obj := gjson.Parse(event)
	if !obj.IsObject() {
		return "", false
	}
	var (
		names memberNames
		dup   string
		found bool
	)
	obj.ForEach(func(key, _ gjson.Result) bool {
		if names.add(key.Str) {
			dup, found = key.Str, true
		}
		return !found
	})
	return dup, found
}

// memberNames finds a name given twice among an object's members: an
// array for the first few (searched only when a name's bit in a 64-bit
// filter is set already), a map beyond. Its zero value is ready, and it
// stays on its user's stack.
type memberNames struct {
	small  [16]string
	n      int
	filter uint64
	seen   map[string]struct{}
}

// add adds name and reports whether it was there already.
func (m *memberNames) add(name string) bool {
	if m.seen == nil && m.n < len(m.small) {
		bit := uint64(1) << nameBit(name)
		if m.filter&bit != 0 && slices.Contains(m.small[:m.n], name) {
			return true
		}
		m.filter |= bit
		m.small[m.n] = name
		m.n++
		return false
	}
	if m.seen == nil {
		m.seen = make(map[string]struct{}, 2*m.n)
		for _, s := range m.small[:m.n] {
			m.seen[s] = struct{}{}
		}
	}
	if _, ok := m.seen[name]; ok {
		return true
	}
	m.seen[name] = struct{}{}
	return false
}

// nameBit is a member name's bit in memberNames' filter.
func nameBit(name string) uint {
	if name == "" {
		return 0
	}
	return (uint(len(name))*31 + uint(name[0])*7 + uint(name[len(name)-1])) & 63
}
