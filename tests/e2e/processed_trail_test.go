package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
)

// TestVerifyCleanAfterRun: a replica chains what it writes (its sink emits
// as envelope version 2, its dead letters sealed), with a closing
// checkpoint per stream when it stops; `dlq replay` withdraws the letters
// it replays; `auditproc verify --all` then finds the processed trail
// whole, and finds an emit deleted from the sink stream, naming it.
func TestVerifyCleanAfterRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ids := e.emitNumbered(stream, 30, "")
	e.emit(stream, `{"actor":"a","action":"x","reject":true}`, `{"actor":"b","action":"y","reject":true}`)
	forged := e.emit(stream, `{"actor":"c","action":"z"}`)[0]
	msgs, err := e.rdb.XRange(ctx, stream, forged, forged).Result()
	require.NoError(t, err)
	values := map[string]any{}
	for k, v := range msgs[0].Values {
		values[k] = v
	}
	values[integrity.FieldEvent] = strings.Replace(values[integrity.FieldEvent].(string), `"actor":"c"`, `"actor":"mallory"`, 1)
	forgery, err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Result()
	require.NoError(t, err)
	cfg := e.config(pipeline(`{"sink": "out"}`))

	code, _, stderr := e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle")
	require.Equal(t, 0, code, tail(stderr, 20))
	require.Len(t, e.deadLetters(dlq), 3, "two rejected, one forged")
	counts := countByEventID(e.sinkRecords(out))
	for _, id := range ids {
		assert.Equal(t, 1, counts[id])
	}

	// The forgery, dead-lettered, is the input trail's only finding.
	require.NoError(t, e.rdb.XDel(ctx, stream, forgery).Err())
	verify := func() (int, verifyReport, string) {
		code, stdout, stderr := e.run(60*time.Second, "verify", "--config", cfg, "--all", "--json")
		var r verifyReport
		require.NoError(t, json.Unmarshal([]byte(stdout), &r), "stdout %q stderr %q", stdout, stderr)
		return code, r, stdout
	}
	code, r, stdout := verify()
	require.Equal(t, 0, code, "the processed trail is whole: %s", stdout)
	closed := map[string]bool{}
	for _, s := range r.Sources {
		if strings.HasPrefix(s.Source, "run.") {
			closed[s.Stream] = s.Closed
		}
	}
	assert.Equal(t, map[string]bool{out: true, dlq: true}, closed, "the replica chained its emits and letters and closed both")

	// The rejected letters replayed: withdrawn, still whole.
	dead := e.deadLetters(dlq)
	replayedLetter := e.fieldsOf(dlq, dead[0].ID)
	code, _, stderr = e.run(30*time.Second, "dlq", "replay", dead[0].ID, dead[1].ID, "--config", cfg)
	require.Equal(t, 0, code, stderr)
	code, r, stdout = verify()
	require.Equal(t, 0, code, "withdrawn letters are no gap: %s", stdout)
	assert.Equal(t, 2, r.Withdrawn)

	// Letters written without the key are never replayed: a sealed one
	// changed, a copy without its seal, a byte-for-byte copy of a letter
	// (the letter is then held back too), a copy of a letter replayed
	// already. verify names each.
	add := func(fields []string) string {
		values := make([]any, len(fields))
		for i, f := range fields {
			values[i] = f
		}
		id, err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: dlq, Values: values}).Result()
		require.NoError(t, err)
		return id
	}
	changed := e.fieldsOf(dlq, dead[2].ID)
	changed[5] = "rejected: changed" // the reason
	unsealed := e.fieldsOf(dlq, dead[2].ID)
	forgedLetters := []string{add(changed), add(unsealed[:len(unsealed)-10]), add(e.fieldsOf(dlq, dead[2].ID)), add(replayedLetter)}
	code, stdout, stderr = e.run(30*time.Second, append([]string{"dlq", "replay", "--config", cfg, "--unsealed", dead[2].ID}, forgedLetters...)...)
	assert.Equal(t, 1, code, stderr)
	assert.Contains(t, stdout, "0 replayed, 5 refused")
	assert.Contains(t, stderr, "its seal does not verify (signature_mismatch)")
	assert.Contains(t, stderr, "written without the key")
	assert.Equal(t, 2, strings.Count(stderr, "is on 2 letters"), stderr)
	assert.Contains(t, stderr, "it was replayed already")
	code, r, stdout = verify()
	require.Equal(t, 1, code, stdout)
	kinds := map[string]int{}
	for _, f := range r.Findings {
		kinds[f.Kind]++
	}
	assert.Equal(t, map[string]int{"bad_signature": 2, "replay": 2}, kinds, stdout)
	require.NoError(t, e.rdb.XDel(ctx, dlq, forgedLetters...).Err())

	// An emit deleted: a gap on the sink stream, named.
	emits, err := e.rdb.XRangeN(ctx, out, "-", "+", 5).Result()
	require.NoError(t, err)
	require.NoError(t, e.rdb.XDel(ctx, out, emits[2].ID).Err())
	code, r, stdout = verify()
	require.Equal(t, 1, code, stdout)
	require.Len(t, r.Findings, 1, stdout)
	assert.Equal(t, "gap", r.Findings[0].Kind)
	assert.Equal(t, out, r.Findings[0].Stream)
	assert.Equal(t, emits[3].ID, r.Findings[0].EntryID, "the first entry after the hole")
	assert.True(t, strings.HasPrefix(r.Findings[0].Source, "run."), r.Findings[0].Source)
}
