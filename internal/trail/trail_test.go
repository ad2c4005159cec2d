package trail

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
)

type entry struct {
	id     string
	fields []string
}

func testKeys(t testing.TB) *integrity.Keyring {
	t.Helper()
	k, err := integrity.NewKeyring("k", map[string][]byte{"k": []byte("0123456789abcdef0123456789abcdef")})
	require.NoError(t, err)
	return k
}

// chain signs n events and a closing checkpoint as one source on stream
// "s", with ids 1000-0, 1001-0, …
func chain(t testing.TB, k *integrity.Keyring, n int, closeIt bool) []entry {
	t.Helper()
	c, err := integrity.NewChain(k, "src", integrity.ChainConfig{})
	require.NoError(t, err)
	now := time.UnixMilli(1000)
	var envs []integrity.Envelope
	for i := range n {
		ev, _, err := integrity.Stamp(fmt.Appendf(nil, `{"i":%d}`, i), now)
		require.NoError(t, err)
		env, err := c.Sign("s", ev, now)
		require.NoError(t, err)
		envs = append(envs, env)
	}
	if closeIt {
		cps, err := c.Close(now)
		require.NoError(t, err)
		envs = append(envs, cps[0].Envelope)
	}
	out := make([]entry, len(envs))
	for i, env := range envs {
		var fields []string
		for _, v := range env.Values() {
			switch v := v.(type) {
			case string:
				fields = append(fields, v)
			case []byte:
				fields = append(fields, string(v))
			}
		}
		out[i] = entry{id: fmt.Sprintf("%d-0", 1000+i), fields: fields}
	}
	return out
}

func check(k *integrity.Keyring, entries []entry, now time.Time) []Finding {
	c := New(k, Config{FromStart: true, Now: now})
	for _, e := range entries {
		c.Add("s", e.id, e.fields)
	}
	f, _ := c.Finish()
	return f
}

func kinds(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind+"@"+f.EntryID)
	}
	return out
}

func TestCheckerFindings(t *testing.T) {
	k := testKeys(t)
	clean := chain(t, k, 5, true) // seq 1-5 events, 6 closing
	late := time.UnixMilli(1000).Add(time.Hour)
	assert.Empty(t, check(k, clean, late), "a clean, closed chain")

	// Out of order within the stream is no finding.
	swapped := append([]entry{}, clean...)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	assert.Empty(t, check(k, swapped, late))

	for _, tc := range []struct {
		name    string
		entries func() []entry
		want    []string
	}{
		{"deleted entry", func() []entry { return append(append([]entry{}, clean[:2]...), clean[3:]...) }, []string{"gap@1003-0"}},
		{"deleted first entry", func() []entry { return clean[1:] }, []string{"gap@1001-0"}},
		{"truncated tail", func() []entry { return clean[:4] }, []string{"missing_tail@1003-0"}},
		{"replay", func() []entry {
			return append(append([]entry{}, clean...), entry{id: "2000-0", fields: clean[2].fields})
		}, []string{"replay@2000-0"}},
		{"ambiguous", func() []entry {
			e := append([]entry{}, clean...)
			e[2] = entry{id: e[2].id, fields: append(append([]string{}, e[2].fields...), "event", "{}")}
			return e
		}, []string{"ambiguous_entry@1002-0", "gap@1003-0"}},
		{"bad signature", func() []entry {
			e := append([]entry{}, clean...)
			f := append([]string{}, e[2].fields...)
			f[len(f)-1] = "00" + f[len(f)-1][2:]
			e[2] = entry{id: e[2].id, fields: f}
			return e
		}, []string{"bad_signature@1002-0", "gap@1003-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, kinds(check(k, tc.entries(), late)))
		})
	}

	// A source not closed, still within its interval: nothing yet.
	assert.Empty(t, check(k, chain(t, k, 3, false), time.UnixMilli(1000).Add(time.Second)))
	// Silent past 1.5 intervals: a missing tail.
	assert.Equal(t, []string{"missing_tail@1002-0"}, kinds(check(k, chain(t, k, 3, false), late)))
}

func TestCheckerChainBreak(t *testing.T) {
	k := testKeys(t)
	clean := chain(t, k, 4, true)
	// seq 3 re-signed with another prev (a key holder's fork).
	var src, event string
	for i := 0; i < len(clean[2].fields); i += 2 {
		switch clean[2].fields[i] {
		case integrity.FieldSource:
			src = clean[2].fields[i+1]
		case integrity.FieldEvent:
			event = clean[2].fields[i+1]
		}
	}
	env, err := k.SignLink("s", integrity.Link{Source: src, Seq: 3, Prev: clean[0].fields[len(clean[0].fields)-1], Kind: integrity.KindEvent}, []byte(event))
	require.NoError(t, err)
	forged := append([]entry{}, clean...)
	forged[2] = entry{id: forged[2].id, fields: []string{"v", "2", "kid", "k", "src", src, "seq", "3", "prev", env.Prev, "kind", "event", "event", event, "sig", env.Sig}}
	got := kinds(check(k, forged, time.UnixMilli(1000).Add(time.Hour)))
	assert.Equal(t, []string{"chain_break@1002-0", "chain_break@1003-0"}, got, "the fork and the entry that follows the real one")
}

// FuzzChecker: whatever entries it is fed, the checker does not panic, and
// every finding names an entry it was given.
func FuzzChecker(f *testing.F) {
	k := testKeys(f)
	clean := chain(f, k, 4, true)
	for _, e := range clean {
		f.Add(e.fields[1], e.fields[5], e.fields[7], e.fields[9], e.fields[11], e.fields[13], e.fields[15], uint8(0))
	}
	f.Add("2", "src/x", "1", "", "event", `{"event_id":"a"}`, "00", uint8(3))
	f.Fuzz(func(t *testing.T, v, src, seq, prev, kind, event, sig string, dup uint8) {
		fields := []string{"v", v, "kid", "k", "src", src, "seq", seq, "prev", prev, "kind", kind, "event", event, "sig", sig}
		if dup%4 == 1 {
			fields = append(fields, "seq", "1")
		}
		entries := append([]entry{}, clean[:2]...)
		entries = append(entries, entry{id: "1500-0", fields: fields})
		entries = append(entries, clean[2:]...)
		if dup%4 == 2 {
			entries = append(entries, entry{id: "1600-0", fields: fields})
		}
		ids := map[string]bool{}
		for _, e := range entries {
			ids[e.id] = true
		}
		for _, fd := range check(k, entries, time.UnixMilli(1000).Add(time.Hour)) {
			assert.True(t, ids[fd.EntryID], "finding %+v names an entry given", fd)
			assert.NotEmpty(t, fd.Kind)
		}
	})
}

// TestMissingTailBySignedTime: a source cut at its end stays a missing
// tail when its last surviving entry is deleted and added again (a new,
// recent stream id): silence is judged by the older of the id's time and
// the entry's signed timestamp.
func TestMissingTailBySignedTime(t *testing.T) {
	k := testKeys(t)
	entries := chain(t, k, 5, false) // signed at 1 s after the epoch, ids 1000-0 …
	now := time.UnixMilli(1000).Add(10 * time.Minute)
	run := func(es []entry) []Finding {
		c := New(k, Config{FromStart: true, Now: now})
		for _, e := range es {
			c.Add("s", e.id, e.fields)
		}
		f, _ := c.Finish()
		return f
	}
	f := run(entries)
	require.Len(t, f, 1)
	assert.Equal(t, MissingTail, f[0].Kind)

	refreshed := slices.Clone(entries)
	last := refreshed[len(refreshed)-1]
	last.id = fmt.Sprintf("%d-0", now.UnixMilli()-1) // re-added a moment ago
	refreshed[len(refreshed)-1] = last
	f = run(refreshed)
	require.Len(t, f, 1, "%+v", f)
	assert.Equal(t, MissingTail, f[0].Kind)
}
