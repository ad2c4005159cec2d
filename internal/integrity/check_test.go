package integrity

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"
)

func TestCheckEventRules(t *testing.T) {
	long := `{"a":"` + strings.Repeat("x", DefaultMaxEventBytes-8) + `"}`
	for _, tc := range []struct{ name, in, rule, want string }{
		{"null", `null`, RuleObject, "not a JSON object"},
		{"array", `[1]`, RuleObject, "not a JSON object"},
		{"not JSON", `{"a":`, RuleJSON, "not valid JSON"},
		{"trailing garbage", `{"a":1} x`, RuleJSON, "not valid JSON"},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", RuleUTF8, "not valid UTF-8"},
		{"numeric id", `{"event_id":5}`, RuleEventID, `"event_id" must be a non-empty string`},
		{"empty id", `{"event_id":""}`, RuleEventID, `"event_id" must be a non-empty string`},
		{"id twice", `{"event_id":"a","event_id":"b"}`, RuleDuplicate, `"event_id" appears twice`},
		{"escaped id twice", `{"event_id":"a","event\u005fid":"b"}`, RuleDuplicate, `"event_id" appears twice`},
		{"any member twice", `{"a":1,"b":2,"a":3}`, RuleDuplicate, `"a" appears twice`},
		{"twice after many", `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"q":19}`, RuleDuplicate, `"q" appears twice`},
		{"bad timestamp", `{"timestamp":"yesterday"}`, RuleTimestamp, "RFC 3339"},
		{"timestamp twice", `{"timestamp":"2026-01-01T00:00:00Z","timestamp":"2026-01-01T00:00:00Z"}`, RuleDuplicate, "appears twice"},
		{"over the limit", `{"a":"` + strings.Repeat("x", DefaultMaxEventBytes) + `"}`, RuleSize, "1 MiB"},
		{"over the limit once stamped", long, RuleSize, "once event_id and timestamp are added"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckEvent([]byte(tc.in), DefaultMaxEventBytes)
			require.ErrorIs(t, err, ErrInvalidEvent)
			var ee *EventError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tc.rule, ee.Rule)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	info, err := CheckEvent([]byte(long), 0)
	require.NoError(t, err, "no limit")
	assert.Greater(t, info.StampedLen(len(long), GeneratedIDLen), DefaultMaxEventBytes)
}

// TestCheckedEventsSign: an event CheckEvent accepts is stamped and signed
// without error, and the stamped bytes keep the limit they were checked
// against.
func TestCheckedEventsSign(t *testing.T) {
	k := testKeyring(t, "k")
	now := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	fits := `{"a":"` + strings.Repeat("x", DefaultMaxEventBytes-8-StampedOverhead()) + `"}`
	for _, in := range []string{`{}`, ` { } `, `{"a":1}`, `{"event_id":"x"}`, `{"timestamp":"2026-01-01T00:00:00Z"}`, fits} {
		info, err := k.CheckEvent([]byte(in))
		require.NoError(t, err, in)
		stamped := AppendStamped(nil, []byte(in), info, DerivedEventID("p", 1), now)
		assert.Len(t, stamped, info.StampedLen(len(in), GeneratedIDLen))
		_, err = k.Sign("s", stamped)
		require.NoError(t, err, "%.80s", stamped)
		sig, kid := k.AppendSig(nil, "s", stamped)
		env, err := k.Verify("s", map[string]any{FieldVersion: Version, FieldKeyID: kid, FieldEvent: string(stamped), FieldSig: string(sig)})
		require.NoError(t, err)
		assert.NotEmpty(t, env.EventID)
	}
}

func TestDerivedEventID(t *testing.T) {
	a := DerivedEventID("file-1", 7)
	assert.Equal(t, a, DerivedEventID("file-1", 7))
	assert.NotEqual(t, a, DerivedEventID("file-1", 8))
	assert.NotEqual(t, a, DerivedEventID("file-2", 7))
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, a)
	// The derivation is fixed: a re-run of a file by a later version must
	// give its events the same ids.
	assert.Equal(t, "c2d6140b-4b30-8f61-8cfd-dee9634b0a2c", a)
	assert.Equal(t, "e97c902f-a5a1-82c5-b4f0-12fe2741d7a7", DerivedEventID(strings.Repeat("p", 200), 1<<40))
}

// TestTimestampLayout: stamping writes the time as AppendFormat with
// TimestampLayout does, fixed width, in UTC.
func TestTimestampLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(812, 3, 4, 5, 6, 7, 8, time.FixedZone("x", 3600)), time.Now()}
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)).In(time.FixedZone("z", r.IntN(50000)-25000)))
	}
	for _, tm := range times {
		require.Equal(t, tm.UTC().Format(TimestampLayout), string(appendTimestamp([]byte("x"), tm))[1:], "%v", tm)
	}
}

// FuzzMembersAgree: the scan of an event's top-level members that
// CheckEvent runs (eachMember) finds what gjson's parser finds: the same
// error, event_id and timestamp, for every object gjson deems valid.
func FuzzMembersAgree(f *testing.F) {
	for _, s := range []string{`{}`, ` { } `, `{"a":1}`, `{"event_id":"x","timestamp":"2026-01-01T00:00:00Z","b":[1,{"c":"}"}]}`,
		`{"a":"\"}","event_id":"q\"x"}`, `{"event\u005fid":"y"}`, `{"a":1,"a":2}`, `{"a\n":1,"a\u000a":2}`, `{"event_id":5}`,
		`{"event_id":""}`, `{"timestamp":"2026-13-01T00:00:00Z"}`, `{"x":{"event_id":1},"event_id":"ok"}`, `{"t":true,"f":false,"n":null,"e":-1.5e3}`,
		"{\"a\"\t:\r\n[ ]\n,\"b\" : \"\"}", `{"event_id":"a","event_id":"b"}`, `{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10,"11":11,"12":12,"13":13,"14":14,"15":15,"16":16,"17":17,"1":0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		view := bytesAsString(in)
		if !gjson.Valid(view) {
			return
		}
		open := skipSpace(in)
		if open >= len(in) || in[open] != '{' {
			return
		}
		fast, ferr := checkMembers(in, open)
		slow, serr := checkMembersParsed(view)
		require.Equal(t, serr, ferr, "%q", in)
		require.Equal(t, slow, fast, "%q", in)
	})
}

// FuzzCheckEvent: CheckEvent's JSON rule is encoding/json's, and every
// event it accepts is stamped into valid JSON whose event_id and timestamp
// encoding/json reads as the ones stamped.
func FuzzCheckEvent(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"event_id":"x","timestamp":"2026-01-01T00:00:00Z"}`, `[1]`, `null`,
		`{"a":"\ud800"}`, `{"a":1e5}`, `{"a":-0.5E-3}`, "{\"a\":\"\x7f\"}", `{"a":"\u00e9"}`, ` {"a":[{},[]]} `, `{"a":01}`, `{"a":.5}`,
		"{\"a\":\"\t\"}", `{"a":tru}`, `{"event\u005fid":"y"}`} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, in []byte) {
		info, err := CheckEvent(in, 0)
		var ee *EventError
		if err != nil {
			require.True(t, errors.As(err, &ee))
		}
		jsonOK := json.Valid(in)
		if ee != nil && ee.Rule == RuleJSON {
			require.False(t, jsonOK, "CheckEvent refused valid JSON %q", in)
			return
		}
		require.True(t, jsonOK, "CheckEvent took invalid JSON %q", in)
		if name, dup := duplicateMember(string(in)); dup {
			require.Error(t, err, "member %q twice", name)
		}
		if err != nil {
			return
		}
		stamped := AppendStamped(nil, in, info, "00000000-0000-8000-8000-000000000000", now)
		var m map[string]any
		require.NoError(t, json.Unmarshal(stamped, &m), "%q", stamped)
		id, _ := m[EventIDMember].(string)
		if info.ID == "" {
			assert.Equal(t, "00000000-0000-8000-8000-000000000000", id)
		} else {
			assert.Equal(t, info.ID, id)
		}
		_, _, err = Stamp(in, now)
		require.NoError(t, err)
	})
}
