package integrity

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestStamp(t *testing.T) {
	now := time.Date(2026, 7, 1, 12, 30, 45, 123456789, time.FixedZone("CEST", 2*3600))
	const ts = `"timestamp":"2026-07-01T10:30:45.123456789Z"`
	for _, tc := range []struct {
		name, in string
		// want is the output with the generated id replaced by ID.
		want   string
		wantID string
	}{
		{"adds both", `{"a":1}`, `{"event_id":"ID",` + ts + `,"a":1}`, ""},
		{"empty object", `{}`, `{"event_id":"ID",` + ts + `}`, ""},
		{"empty object with spaces", ` { } `, ` {"event_id":"ID",` + ts + ` } `, ""},
		{"keeps producer bytes", "\n{ \"b\" : [1, 2],\n \"a\":\"x\" }", "\n{\"event_id\":\"ID\"," + ts + ", \"b\" : [1, 2],\n \"a\":\"x\" }", ""},
		{"has id", `{"event_id":"mine-1","a":1}`, `{` + ts + `,"event_id":"mine-1","a":1}`, "mine-1"},
		{"has timestamp", `{"a":1,"timestamp":"2020-01-01T00:00:00+02:00"}`, `{"event_id":"ID","a":1,"timestamp":"2020-01-01T00:00:00+02:00"}`, ""},
		{"has both", `{"timestamp":"2020-01-01T00:00:00Z", "event_id":"e"}`, `{"timestamp":"2020-01-01T00:00:00Z", "event_id":"e"}`, "e"},
		{"nested members do not count", `{"x":{"event_id":"inner","timestamp":"2020-01-01T00:00:00Z"}}`, `{"event_id":"ID",` + ts + `,"x":{"event_id":"inner","timestamp":"2020-01-01T00:00:00Z"}}`, ""},
		{"escaped id", `{"event_id":"a\"b","timestamp":"2020-01-01T00:00:00Z"}`, `{"event_id":"a\"b","timestamp":"2020-01-01T00:00:00Z"}`, `a"b`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, id, err := Stamp([]byte(tc.in), now)
			require.NoError(t, err)
			got := string(out)
			if tc.wantID != "" {
				assert.Equal(t, tc.wantID, id)
			} else {
				assert.Regexp(t, uuidV7, id)
				got = strings.Replace(got, `"`+id+`"`, `"ID"`, 1)
			}
			assert.Equal(t, tc.want, got)
			assert.True(t, json.Valid(out), "output is JSON: %s", out)
		})
	}

	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", `{"a":`, "not valid JSON"},
		{"empty", ``, "not valid JSON"},
		{"not UTF-8", "{\"a\":\"\xff\"}", "not valid UTF-8"},
		{"array", `[{"a":1}]`, "not a JSON object"},
		{"string", `"{"`, "not a JSON object"},
		{"number id", `{"event_id":42}`, `"event_id" must be a non-empty string`},
		{"empty id", `{"event_id":""}`, `"event_id" must be a non-empty string`},
		{"number timestamp", `{"timestamp":1700000000}`, `"timestamp" must be an RFC 3339 string`},
		{"bad timestamp", `{"timestamp":"yesterday"}`, `"timestamp" must be an RFC 3339 string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Stamp([]byte(tc.in), now)
			require.ErrorIs(t, err, ErrInvalidEvent)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestEventIDsAreTimeOrderedUUIDv7(t *testing.T) {
	start := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	// Steps below a millisecond too: the sub-millisecond bits keep order.
	for i := range 200 {
		ids = append(ids, newEventID(start.Add(time.Duration(i)*300*time.Microsecond)))
	}
	for _, id := range ids {
		require.Regexp(t, uuidV7, id)
	}
	assert.True(t, slices.IsSorted(ids), "ids sort by creation time")
	// The first 48 bits are the Unix time in milliseconds.
	ms := fmt.Sprintf("%012x", start.UnixMilli())
	assert.Equal(t, ms[:8]+"-"+ms[8:]+"-7000", ids[0][:18], "whole millisecond: sub-millisecond bits zero")
	// 300µs after it: 300/1000*4096 = 1228 = 0x4cc in the 12 bits after the version.
	assert.Equal(t, ms[:8]+"-"+ms[8:]+"-74cc", ids[1][:18])
	// Same instant, different random bits.
	assert.NotEqual(t, newEventID(start), newEventID(start))
}

func TestSignRejectsUnstampedEvents(t *testing.T) {
	k := testKeyring(t, "k")
	for _, tc := range []struct{ name, event, want string }{
		{"empty", ``, "event is 0 bytes"},
		{"not UTF-8", "{\"event_id\":\"a\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"x\":\"\xff\"}", "not valid UTF-8"},
		{"no event id", `{"timestamp":"2026-01-01T00:00:00Z"}`, `no top-level string "event_id"`},
		{"empty event id", `{"event_id":"","timestamp":"2026-01-01T00:00:00Z"}`, `no top-level string "event_id"`},
		{"no timestamp", `{"event_id":"a"}`, `no top-level RFC 3339 "timestamp"`},
		{"bad timestamp", `{"event_id":"a","timestamp":"now"}`, `no top-level RFC 3339 "timestamp"`},
		{"numeric timestamp", `{"event_id":"a","timestamp":1}`, `no top-level RFC 3339 "timestamp"`},
		{"not an object", `["event_id","timestamp"]`, `no top-level string "event_id"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Sign("s", []byte(tc.event))
			require.ErrorIs(t, err, ErrInvalidEvent)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestVerifyChecksSignedContent: a producer holding a valid key signed an
// event that is not acceptable; the MAC matches, the envelope is malformed.
func TestVerifyChecksSignedContent(t *testing.T) {
	k := testKeyring(t, "k")
	for _, tc := range []struct{ name, event, want string }{
		{"no event id", `{"timestamp":"2026-01-01T00:00:00Z"}`, "no top-level non-empty string event_id"},
		{"numeric event id", `{"event_id":7}`, "no top-level non-empty string event_id"},
		{"empty event id", `{"event_id":""}`, "no top-level non-empty string event_id"},
		{"not UTF-8", "{\"event_id\":\"\xc3\x28\"}", "not valid UTF-8"},
		{"not an object", `"event_id"`, "no top-level non-empty string event_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := rawSigned(t, k, "s", tc.event)
			_, err := k.Verify("s", vals)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), `field "event": `+tc.want)
		})
	}
}

// rawSigned builds a correctly signed entry around any event bytes,
// bypassing Sign's checks, the way a careless non-Go producer might.
func rawSigned(t *testing.T, k *Keyring, stream, event string) map[string]any {
	t.Helper()
	key := k.active
	st := key.pool.Get().(*macState)
	defer key.pool.Put(st)
	key.mac(st, stream, []byte(event))
	return entry(Envelope{KeyID: key.id, Event: []byte(event), Sig: hexString(st.sum[:])})
}

// TestDuplicateMemberRefused: a producer never signs an event that names a
// top-level member twice (parsers disagree on which one wins); nested
// objects may repeat their parents' names.
func TestDuplicateMemberRefused(t *testing.T) {
	k := testKeyring(t, "k1")
	base := `"event_id":"e1","timestamp":"2026-07-01T10:30:45Z"`
	many := ""
	for i := range 40 {
		many += fmt.Sprintf(`,"m%d":%d`, i, i)
	}
	for _, tc := range []struct {
		name, event, dup string
	}{
		{"action twice", `{` + base + `,"action":"a","action":"b"}`, "action"},
		{"event_id twice", `{` + base + `,"event_id":"e2"}`, "event_id"},
		{"escaped name", `{` + base + `,"a":1,"\u0061":2}`, "a"},
		{"empty name twice", `{` + base + `,"":1,"":2}`, ""},
		{"after many members", `{` + base + many + `,"m3":0}`, "m3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, dup := duplicateMember(tc.event)
			require.True(t, dup)
			assert.Equal(t, tc.dup, name)
			_, err := k.Sign("s", []byte(tc.event))
			require.ErrorIs(t, err, ErrInvalidEvent)
			assert.Contains(t, err.Error(), "appears twice")
			_, _, err = Stamp([]byte(tc.event), time.Now())
			require.ErrorIs(t, err, ErrInvalidEvent)
		})
	}
	for _, ok := range []string{`{` + base + `,"a":{"a":1,"b":{"a":2}}}`, `{` + base + many + `}`} {
		_, dup := duplicateMember(ok)
		assert.False(t, dup, ok)
		_, err := k.Sign("s", []byte(ok))
		assert.NoError(t, err)
	}
	_, dup := duplicateMember(`[1,2,3]`)
	assert.False(t, dup, "not an object")
}
