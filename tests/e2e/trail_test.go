package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// repeatedEntries are, for each envelope field and both orders (the signed
// value first, the signed value last), a copy of a valid entry's fields
// with that field named twice. XADD accepts them all.
func repeatedEntries(t *testing.T, valid []string) map[string][]string {
	t.Helper()
	others := map[string]string{
		integrity.FieldVersion: "9",
		integrity.FieldKeyID:   "other-kid",
		integrity.FieldEvent:   `{"event_id":"forged","timestamp":"2026-01-01T00:00:00Z","action":"evil"}`,
		integrity.FieldSig:     strings.Repeat("0", 64),
	}
	out := map[string][]string{}
	for _, name := range []string{integrity.FieldVersion, integrity.FieldKeyID, integrity.FieldEvent, integrity.FieldSig} {
		i := slices.Index(valid, name)
		require.GreaterOrEqual(t, i, 0, "field %s in %q", name, valid)
		out[name+" twice, signed value first"] = append(slices.Clone(valid), name, others[name])
		out[name+" twice, signed value last"] = slices.Insert(slices.Clone(valid), i, name, others[name])
	}
	return out
}

// TestRepeatedFieldRefusedOnEveryPath: an entry that names a field twice is
// malformed_envelope however it is read — blocking read, non-blocking read,
// XAUTOCLAIM, XCLAIM, `dlq replay`, `verify` — whichever of the two values
// is signed; its dead letter keeps every field in stream order.
func TestRepeatedFieldRefusedOnEveryPath(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	valid, err := e.keys.Sign(stream, stampedEvent(t, `{"action":"user.login","actor":"alice"}`))
	require.NoError(t, err)
	var validFields []string
	for _, v := range valid.Values() {
		validFields = append(validFields, toString(v))
	}
	cases := repeatedEntries(t, validFields)
	require.NoError(t, e.rdb.XGroupCreateMkStream(ctx, stream, "g1", "$").Err())

	// Blocking read: the entries arrive, all at once (one transaction),
	// while it waits.
	blocked := make(chan streambus.Batch, 1)
	go func() {
		b, err := e.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g1", Consumer: "c1", Block: 10 * time.Second})
		assert.NoError(t, err)
		blocked <- b
	}()
	time.Sleep(300 * time.Millisecond)
	ids := map[string]string{} // entry id → case
	tx := e.rdb.TxPipeline()
	adds := map[string]*redis.Cmd{}
	for name, fields := range cases {
		adds[name] = tx.Do(ctx, rawXAdd(stream, fields)...)
	}
	_, err = tx.Exec(ctx)
	require.NoError(t, err)
	for name, cmd := range adds {
		id, err := cmd.Text()
		require.NoError(t, err)
		ids[id] = name
	}
	require.Len(t, ids, 8)

	refusedAll := func(path string, b streambus.Batch) {
		t.Helper()
		assert.Empty(t, b.Entries, "%s: no ambiguous entry verifies", path)
		got := map[string]bool{}
		for _, tm := range b.Tampered {
			got[tm.ID] = true
			assert.Equal(t, "malformed_envelope", tm.Reason, "%s: %s: %v", path, ids[tm.ID], tm.Err)
		}
		for id, name := range ids {
			assert.True(t, got[id], "%s: %s (%s) refused", path, name, id)
		}
	}
	refusedAll("blocking read", <-blocked)

	require.NoError(t, e.rdb.XGroupCreate(ctx, stream, "g2", "0").Err())
	fast, err := e.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g2", Consumer: "c1", Block: -1})
	require.NoError(t, err)
	refusedAll("non-blocking read", fast)

	claimed, err := e.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: stream, Group: "g2", Consumer: "c2"})
	require.NoError(t, err)
	refusedAll("xautoclaim", claimed)

	// Dead-lettered, the letter keeps every raw field in stream order.
	var letters []streambus.Letter
	for _, tm := range claimed.Tampered {
		letters = append(letters, tm.Letter())
	}
	_, err = e.bus.DeadLetter(ctx, stream, "g2", dlq, letters...)
	require.NoError(t, err)
	dead, err := e.bus.XRange(ctx, dlq, "-", "+", 100)
	require.NoError(t, err)
	require.Len(t, dead, 8)
	for _, d := range dead {
		var original string
		var entry []string
		for i := 0; i < len(d.Fields); i += 2 {
			if d.Fields[i] == streambus.DeadLetterOriginalID {
				original = d.Fields[i+1]
			}
			if name, ok := strings.CutPrefix(d.Fields[i], streambus.DeadLetterFieldPrefix); ok {
				entry = append(entry, name, d.Fields[i+1])
			}
		}
		assert.Equal(t, cases[ids[original]], entry, "dead letter of %s: the fields as written, in order", ids[original])
	}

	// dlq replay refuses every one and appends nothing.
	cfg := e.config("plugins: []\n")
	before := e.xlen(stream)
	code, stdout, stderr := e.run(30*time.Second, "dlq", "replay", "--all", "--unsealed", "--config", cfg)
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "0 replayed, 8 refused")
	assert.Equal(t, before, e.xlen(stream))
	assert.Equal(t, 8, strings.Count(stderr, "malformed_envelope"), stderr)

	// verify names each one.
	code, r := e.verifyJSON("--stream", stream)
	assert.Equal(t, 1, code)
	ambiguous := map[string]bool{}
	for _, f := range r.Findings {
		if f.Kind == "ambiguous_entry" {
			ambiguous[f.EntryID] = true
		}
	}
	for id, name := range ids {
		assert.True(t, ambiguous[id], "verify: %s (%s) is ambiguous", name, id)
	}
}

// stampedEvent stamps event with an event id and a timestamp.
func stampedEvent(t *testing.T, event string) []byte {
	t.Helper()
	out, _, err := integrity.Stamp([]byte(event), time.Now())
	require.NoError(t, err)
	return out
}

// rawXAdd is the command XADD stream * fields..., as a raw client would
// send it.
func rawXAdd(stream string, fields []string) []any {
	args := []any{"xadd", stream, "*"}
	for _, f := range fields {
		args = append(args, f)
	}
	return args
}

func toString(v any) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(v)
}

// chainOn writes n events to stream as one chained source (checkpoints
// every `every` entries, interval 200ms) and closes it when closeIt; it
// returns the entry ids in stream order and the source id.
func (e *env) chainOn(stream string, n, every int, closeIt bool) ([]string, string) {
	e.t.Helper()
	ctx := context.Background()
	bus, err := streambus.New(streambus.Config{Source: "e2e-producer",
		Checkpoint: integrity.ChainConfig{CheckpointEvery: every, CheckpointInterval: 200 * time.Millisecond}},
		nil, e.rdb, e.keys)
	require.NoError(e.t, err)
	for i := range n {
		_, err := bus.XAdd(ctx, stream, fmt.Appendf(nil, `{"action":"act-%d","actor":"user-%d"}`, i, i%5), 0)
		require.NoError(e.t, err)
	}
	if closeIt {
		require.NoError(e.t, bus.CloseChain(ctx))
	}
	msgs, err := e.rdb.XRange(ctx, stream, "-", "+").Result()
	require.NoError(e.t, err)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids, bus.Source()
}

// verifyJSON runs `auditproc verify --json` with args and returns its exit
// code and report.
func (e *env) verifyJSON(args ...string) (int, verifyReport) {
	e.t.Helper()
	cfg := e.config("plugins: []\n")
	code, stdout, stderr := e.run(60*time.Second, append([]string{"verify", "--config", cfg, "--json"}, args...)...)
	var r verifyReport
	require.NoError(e.t, json.Unmarshal([]byte(stdout), &r), "stdout %q stderr %q", stdout, stderr)
	return code, r
}

type verifyReport struct {
	OK        bool `json:"ok"`
	Entries   int  `json:"entries"`
	Voids     int  `json:"voids"`
	Withdrawn int  `json:"withdrawn_dead_letters"`
	Sources   []struct {
		Stream string `json:"stream"`
		Source string `json:"source"`
		Closed bool   `json:"closed"`
	} `json:"sources"`
	Findings []struct {
		Stream  string `json:"stream"`
		EntryID string `json:"entry_id"`
		Source  string `json:"source"`
		Kind    string `json:"kind"`
		Seq     uint64 `json:"seq"`
		Detail  string `json:"detail"`
	} `json:"findings"`
}

// fieldsOf returns an entry's fields as stored, in order.
func (e *env) fieldsOf(stream, id string) []string {
	e.t.Helper()
	entries, err := e.bus.XRange(context.Background(), stream, id, id, 1)
	require.NoError(e.t, err)
	require.Len(e.t, entries, 1)
	return slices.Clone(entries[0].Fields)
}

// TestChainDetectsDeletedEntry: an entry deleted from the middle of a
// source's chain (XDEL) is a gap named with the entry after it and the
// source; the trail without it verified clean.
func TestChainDetectsDeletedEntry(t *testing.T) {
	e := newEnv(t)
	ids, source := e.chainOn(stream, 10, 1000, true)
	code, r := e.verifyJSON()
	require.Equal(t, 0, code, "a clean trail: %+v", r.Findings)
	assert.True(t, r.OK)

	require.NoError(t, e.rdb.XDel(context.Background(), stream, ids[4]).Err())
	code, r = e.verifyJSON()
	assert.Equal(t, 1, code)
	require.Len(t, r.Findings, 1, "%+v", r.Findings)
	f := r.Findings[0]
	assert.Equal(t, "gap", f.Kind)
	assert.Equal(t, ids[5], f.EntryID, "named by the entry after the hole")
	assert.Equal(t, source, f.Source)
	assert.EqualValues(t, 6, f.Seq)
	assert.Contains(t, f.Detail, "seq 5 (1 entry) missing")
}

// TestChainDetectsTruncatedTail: the last entries of a source deleted, its
// closing checkpoint among them, are a missing tail once the source's
// checkpoint interval has passed.
func TestChainDetectsTruncatedTail(t *testing.T) {
	e := newEnv(t)
	// A checkpoint every 2 events: e e c e e c e e c, then the closing one.
	ids, source := e.chainOn(stream, 6, 2, true)
	for _, id := range ids[len(ids)-3:] { // after the last checkpoint kept: two events and the closing checkpoint
		require.NoError(t, e.rdb.XDel(context.Background(), stream, id).Err())
	}
	time.Sleep(400 * time.Millisecond) // past 1.5 × the 200ms interval
	code, r := e.verifyJSON()
	assert.Equal(t, 1, code)
	require.Len(t, r.Findings, 1, "%+v", r.Findings)
	f := r.Findings[0]
	assert.Equal(t, "missing_tail", f.Kind)
	assert.Equal(t, ids[len(ids)-4], f.EntryID, "named by the last entry left")
	assert.Equal(t, source, f.Source)
	assert.EqualValues(t, len(ids)-3, f.Seq)
}

// TestVerifyReportsEachDamage: `auditproc verify` on a clean trail exits 0;
// each kind of damage made with raw Redis commands, on a stream of its own,
// exits 1 with the finding named by its entry id and source. The walk never
// writes.
func TestVerifyReportsEachDamage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	raw := func(stream string, fields []string) string {
		id, err := e.rdb.Do(ctx, rawXAdd(stream, fields)...).Text()
		require.NoError(t, err)
		return id
	}
	valueOf := func(fields []string, name string) string {
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i] == name {
				return fields[i+1]
			}
		}
		t.Fatalf("no field %q in %q", name, fields)
		return ""
	}
	set := func(fields []string, name, value string) []string {
		out := slices.Clone(fields)
		for i := 0; i+1 < len(out); i += 2 {
			if out[i] == name {
				out[i+1] = value
			}
		}
		return out
	}
	type damage struct {
		stream string
		kind   string
		// do damages the stream and returns the entry id the finding names.
		do func(ids []string) string
	}
	damages := []damage{
		{"d:bad-signature", "bad_signature", func(ids []string) string {
			f := e.fieldsOf("d:bad-signature", ids[2])
			return raw("d:bad-signature", set(f, "event", strings.Replace(valueOf(f, "event"), "act-2", "act-X", 1)))
		}},
		{"d:ambiguous", "ambiguous_entry", func(ids []string) string {
			f := e.fieldsOf("d:ambiguous", ids[2])
			return raw("d:ambiguous", append(f, "event", `{"event_id":"x","action":"evil"}`))
		}},
		{"d:replay-copy", "replay", func(ids []string) string {
			return raw("d:replay-copy", e.fieldsOf("d:replay-copy", ids[1]))
		}},
		{"d:replay-reordered", "replay", func(ids []string) string {
			f := e.fieldsOf("d:replay-reordered", ids[1])
			var rev []string
			for i := len(f) - 2; i >= 0; i -= 2 {
				rev = append(rev, f[i], f[i+1])
			}
			return raw("d:replay-reordered", rev)
		}},
		{"d:gap", "gap", func(ids []string) string {
			require.NoError(t, e.rdb.XDel(ctx, "d:gap", ids[1], ids[2]).Err())
			return ids[3]
		}},
		{"d:chain-break", "chain_break", func(ids []string) string {
			// A key holder's fork: seq 4 signed again with another prev,
			// the real seq 4 deleted.
			f := e.fieldsOf("d:chain-break", ids[3])
			env, err := e.keys.SignLink("d:chain-break", integrity.Link{Source: valueOf(f, "src"), Seq: 4,
				Prev: strings.Repeat("ab", 32), Kind: "event"}, []byte(valueOf(f, "event")))
			require.NoError(t, err)
			require.NoError(t, e.rdb.XDel(ctx, "d:chain-break", ids[3]).Err())
			id, err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "d:chain-break", Values: env.Values()}).Result()
			require.NoError(t, err)
			return id
		}},
	}
	for _, d := range damages {
		ids, source := e.chainOn(d.stream, 6, 1000, true)
		code, r := e.verifyJSON("--stream", d.stream)
		require.Equal(t, 0, code, "%s clean: %+v", d.stream, r.Findings)
		at := d.do(ids)
		before := e.xlen(d.stream)
		code, r = e.verifyJSON("--stream", d.stream)
		assert.Equal(t, 1, code, d.stream)
		assert.Equal(t, before, e.xlen(d.stream), "verify never writes")
		var kinds []string
		found := false
		for _, f := range r.Findings {
			kinds = append(kinds, f.Kind)
			if f.Kind == d.kind && f.EntryID == at {
				found = true
				assert.Equal(t, source, f.Source, "%s names the source", d.kind)
			}
		}
		assert.True(t, found, "%s: a %s finding at %s, got %v: %+v", d.stream, d.kind, at, kinds, r.Findings)
	}

	// The table a person reads, on one stream with several damages: an
	// entry deleted, a replay, an ambiguous entry, and a second source
	// whose tail (closing checkpoint included) was cut.
	ids, _ := e.chainOn("d:all", 8, 1000, true)
	require.NoError(t, e.rdb.XDel(ctx, "d:all", ids[2]).Err())
	raw("d:all", e.fieldsOf("d:all", ids[4]))
	raw("d:all", append(e.fieldsOf("d:all", ids[5]), "sig", strings.Repeat("0", 64)))
	ids2, _ := e.chainOn("d:all", 6, 2, true)
	require.NoError(t, e.rdb.XDel(ctx, "d:all", ids2[len(ids2)-1], ids2[len(ids2)-2], ids2[len(ids2)-3]).Err())
	time.Sleep(400 * time.Millisecond)
	cfg := e.config("plugins: []\n")
	code, stdout, _ := e.run(60*time.Second, "verify", "--config", cfg, "--stream", "d:all")
	assert.Equal(t, 1, code)
	for _, kind := range []string{"FINDING", "gap", "replay", "ambiguous_entry", "missing_tail"} {
		assert.Contains(t, stdout, kind)
	}
	t.Logf("auditproc verify on a damaged trail:\n%s", stdout)

	code, _, stderr := e.run(20*time.Second, "verify", "--config", cfg, "--from", "yesterday")
	assert.Equal(t, 2, code, "a bad id is a usage error")
	assert.Contains(t, stderr, "not a stream entry id")
}

// TestWrongKeyringRefusedAtStart: run refuses to start (exit 2) when none
// of the stream's newest entries verifies with its keyring, naming the key
// ids seen and held, and leaves every entry untouched; --force starts
// anyway. A keyring file writable by group or others is refused (exit 2);
// one readable by them is a warning.
func TestWrongKeyringRefusedAtStart(t *testing.T) {
	e := newEnv(t)
	e.emitNumbered(stream, 5, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	other, err := integrity.GenerateKey()
	require.NoError(t, err)
	wrong := filepath.Join(e.dir, "wrong-keys")
	require.NoError(t, os.WriteFile(wrong, []byte(integrity.FormatKeyLine("other-key", other)+"\n"), 0o600))
	run := func(keysFile string, args ...string) (int, string) {
		cmd := exec.Command(binary, append([]string{"run", "--config", cfg, "--stop-when-idle"}, args...)...)
		cmd.Env = append(os.Environ(), "AUDITPROC_HMAC_KEYS_FILE="+keysFile)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		require.NoError(t, cmd.Start())
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("run did not exit: %s", stderr.String())
		}
		return cmd.ProcessState.ExitCode(), stderr.String()
	}

	code, stderr := run(wrong)
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "none of the newest 5 entries")
	assert.Contains(t, stderr, "key ids seen in them: e2e")
	assert.Contains(t, stderr, "key ids held: other-key")
	assert.Zero(t, e.xlen(dlq), "nothing dead-lettered")
	groups, err := e.rdb.XInfoGroups(context.Background(), stream).Result()
	require.NoError(t, err)
	assert.Empty(t, groups, "refused before reading anything")

	code, stderr = run(wrong, "--force")
	assert.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "none of the newest")

	// The right keyring, in files of other modes.
	key, err := os.ReadFile(e.keysFile)
	require.NoError(t, err)
	writable := filepath.Join(e.dir, "writable-keys")
	require.NoError(t, os.WriteFile(writable, key, 0o600))
	require.NoError(t, os.Chmod(writable, 0o620))
	code, stderr = run(writable)
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "writable by group or others")

	readable := filepath.Join(e.dir, "readable-keys")
	require.NoError(t, os.WriteFile(readable, key, 0o600))
	require.NoError(t, os.Chmod(readable, 0o644))
	code, stderr = run(readable)
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "keyring_file_readable")
}
