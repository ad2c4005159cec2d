package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	stream = "audit:stream"
	group  = "audit-consumers"
	dlq    = "audit:dead"
	out    = "audit:out"
)

// pipeline is the e2e plugin with a stream sink; conf is its JSON config.
func pipeline(conf string) string {
	return `sinks:
  out: {type: stream, stream: audit:out}
plugins:
  - name: e2e
    path: $WASM/e2e-go.wasm
    sinks: [out]
    config: ` + conf + "\n"
}

func TestFailingDeliveriesThenSuccessAckedOnce(t *testing.T) {
	e := newEnv(t)
	ids := e.emitNumbered(stream, 5, "")
	cfg := e.config(pipeline(`{"fail_first": 2, "sink": "out"}`))

	code, stdout, _ := e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle", "--summary")
	require.Equal(t, 0, code)

	recs := e.sinkRecords(out)
	counts := countByEventID(recs)
	for _, id := range ids {
		assert.Equal(t, 1, counts[id], "event %s emitted exactly once", id)
	}
	for _, r := range recs {
		assert.EqualValues(t, 3, r["deliveries"], "succeeded on delivery N+1 = 3")
	}
	assert.Zero(t, e.pending(stream, group))
	assert.Zero(t, e.xlen(dlq))
	assert.Contains(t, stdout, "retries scheduled")
}

func TestRejectDeadLettersAtOnceDropAcksWithoutEmit(t *testing.T) {
	e := newEnv(t)
	e.emit(stream,
		`{"actor":"a","action":"x","reject":true}`,
		`{"actor":"b","action":"y","drop":true}`,
		`{"actor":"c","action":"z"}`)
	cfg := e.config(pipeline(`{"sink": "out"}`))

	code, _, _ := e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle")
	require.Equal(t, 0, code)

	recs := e.sinkRecords(out)
	require.Len(t, recs, 1, "only the ok event emits; drop emits nothing")
	assert.Zero(t, e.pending(stream, group))

	dead := e.deadLetters(dlq)
	require.Len(t, dead, 1)
	assert.Equal(t, "1", dead[0].Values["deliveries"], "rejected on first delivery, not retried")
	assert.Contains(t, dead[0].Values["reason"], "event marked reject")
}

func TestPoisonEventDeadLetteredThenReplayed(t *testing.T) {
	e := newEnv(t)
	e.emitNumbered(stream, 20, "")
	poison := e.emit(stream, `{"actor":"mallory","action":"poison","poison":true}`)[0]
	cfg := e.config(pipeline(`{"sink": "out"}`))

	code, _, _ := e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle")
	require.Equal(t, 0, code)
	assert.Len(t, e.sinkRecords(out), 20, "the good events are unaffected")
	assert.Zero(t, e.pending(stream, group))

	code, stdout, stderr := e.run(30*time.Second, "dlq", "list", "--config", cfg, "--json")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, poison)
	assert.Contains(t, stdout, "max_deliveries")
	assert.Contains(t, stdout, "poison event: never succeeds", "the last failure is in the reason")

	before := e.xlen(stream)
	code, stdout, stderr = e.run(30*time.Second, "dlq", "replay", "--all", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "1 replayed, 0 refused")
	assert.Equal(t, before+2, e.xlen(stream), "the replayed entry and the replay's closing checkpoint")
	assert.Empty(t, e.deadLetters(dlq), "the replayed letter is withdrawn")

	// The replayed entry is a new, verified entry carrying the same event id.
	msgs, err := e.rdb.XRevRangeN(context.Background(), stream, "+", "-", 2).Result()
	require.NoError(t, err)
	assert.Equal(t, "checkpoint", msgs[0].Values["kind"])
	env, err := e.keys.Verify(stream, msgs[1].Values)
	require.NoError(t, err)
	assert.Contains(t, string(env.Event), `"poison":true`)
	assert.Contains(t, stdout, env.EventID)
}

func TestForgedEntriesNeverReachAPlugin(t *testing.T) {
	e := newEnv(t)
	good := e.emit(stream, `{"actor":"alice","action":"login"}`)
	ctx := context.Background()
	// Unsigned, wrong signature, and a real signature made for another stream.
	unsigned, err := e.rdb.XAdd(ctx, redisXAdd{stream, []any{"event", `{"actor":"eve","action":"forge"}`}}.args()).Result()
	require.NoError(t, err)
	other, err := e.keys.Sign("audit:other", []byte(`{"event_id":"x1","timestamp":"2026-01-01T00:00:00Z","actor":"eve"}`))
	require.NoError(t, err)
	replayed, err := e.rdb.XAdd(ctx, redisXAdd{stream, other.Values()}.args()).Result()
	require.NoError(t, err)
	bad := other
	bad.Sig = strings.Repeat("0", 64)
	badSig, err := e.rdb.XAdd(ctx, redisXAdd{stream, bad.Values()}.args()).Result()
	require.NoError(t, err)

	metrics := freeAddr(t)
	cfg := e.config(pipeline(`{"sink": "out"}`))
	p := e.start("run", "--config", cfg, "--metrics-addr", metrics)
	waitFor(t, 20*time.Second, "the good event to be processed", func() bool { return e.xlen(out) == 1 })
	waitFor(t, 20*time.Second, "the forged entries to be dead-lettered", func() bool { return len(e.deadLetters(dlq)) == 3 })

	resp, err := http.Get("http://" + metrics + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), `auditproc_entries_tampered_total{reason="unsigned"}`)
	assert.Contains(t, string(body), `auditproc_entries_tampered_total{reason="signature_mismatch"}`)
	assert.Contains(t, string(body), `auditproc_entries_dead_lettered_total`)

	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(20*time.Second))

	recs := e.sinkRecords(out)
	require.Len(t, recs, 1, "only the signed event reached the plugin")
	assert.Equal(t, good[0], recs[0]["entry_id"])

	logged := map[string]string{}
	for _, l := range p.logLines("security_audit_tampered_message") {
		logged[l["entry_id"].(string)] = l["reason"].(string)
	}
	assert.Equal(t, "unsigned", logged[unsigned])
	assert.Equal(t, "signature_mismatch", logged[replayed], "a signature for another stream does not verify here")
	assert.Equal(t, "signature_mismatch", logged[badSig])
}

func TestBadConfigurationsExitTwoNamingTheKey(t *testing.T) {
	files, err := filepathGlob("../../internal/config/testdata/*.bad.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		want := wantKey(t, f)
		for _, cmd := range [][]string{{"config", "check", f}, {"run", "--config", f}} {
			t.Run(fmt.Sprintf("%s/%s", cmd[0], baseName(f)), func(t *testing.T) {
				code, _, stderr := runBinary(t, 20*time.Second, cmd...)
				assert.Equal(t, 2, code, stderr)
				assert.Contains(t, stderr, want)
			})
		}
	}
}

// TestInvalidEmitIsRejectedWithoutStallingOthers: a plugin emits an event no
// sink can store; that entry is dead-lettered with the reason, and the
// entries around it are processed as usual instead of waiting behind it.
func TestInvalidEmitIsRejectedWithoutStallingOthers(t *testing.T) {
	e := newEnv(t)
	ids := e.emitNumbered(stream, 10, "")
	e.emit(stream, `{"actor":"x","action":"y","bad_emit":true}`)
	more := e.emitNumbered(stream, 10, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	code, _, _ := e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle")
	require.Equal(t, 0, code)
	counts := countByEventID(e.sinkRecords(out))
	for _, id := range append(ids, more...) {
		assert.Equal(t, 1, counts[id])
	}
	assert.Zero(t, e.pending(stream, group))
	dead := e.deadLetters(dlq)
	require.Len(t, dead, 1)
	assert.Contains(t, dead[0].Values["reason"], `emitted an invalid event for sink "out"`)
}
