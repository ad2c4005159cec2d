package e2e

import (
	"context"
	"fmt"
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
	code, stdout, stderr := e.run(30*time.Second, "dlq", "replay", "--all", "--config", cfg)
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "0 replayed, 8 refused")
	assert.Equal(t, before, e.xlen(stream))
	assert.Equal(t, 8, strings.Count(stderr, "malformed_envelope"), stderr)
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
