package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
)

// producerKeys is the test's keyring as the audit package loads it.
func (e *env) producerKeys() *audit.Keyring {
	e.t.Helper()
	keys, err := audit.LoadKeyring(func(k string) string {
		if k == audit.EnvKeysFile {
			return e.keysFile
		}
		return ""
	})
	require.NoError(e.t, err)
	return keys
}

// requireChained checks that every entry of stream is envelope version 2
// and returns the sources seen and how many entries are checkpoints.
func (e *env) requireChained(stream string) (map[string]int, int) {
	e.t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(e.t, err)
	sources := map[string]int{}
	checkpoints := 0
	for _, m := range msgs {
		require.Equal(e.t, "2", m.Values["v"], "entry %s is envelope v2", m.ID)
		sources[fmt.Sprint(m.Values["src"])]++
		if m.Values["kind"] == "checkpoint" {
			checkpoints++
		}
	}
	return sources, checkpoints
}

// TestVerifyCleanAfterEmitFile: `auditproc emit --file` signs one v2 chain
// with checkpoints and a closing one; `auditproc verify` finds the trail
// whole.
func TestVerifyCleanAfterEmitFile(t *testing.T) {
	e := newEnv(t)
	const n = 2500
	path := filepath.Join(e.dir, "events.jsonl")
	writeNumberedEvents(t, path, n, 120)
	code, stdout, stderr := e.emitRun(nil, "--file", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("%d written", n))

	sources, checkpoints := e.requireChained(stream)
	assert.Len(t, sources, 1, "one source: %v", sources)
	assert.Equal(t, n/1000+1, checkpoints, "one every 1000 events and the closing one")
	ns, ids := e.streamNumbers(stream)
	requireOnceInOrder(t, ns, ids, n)

	code, r := e.verifyJSON("--stream", stream)
	require.Equal(t, 0, code, "a clean trail: %+v", r.Findings)
	assert.True(t, r.OK)
	assert.Equal(t, n+checkpoints, r.Entries)

	// The same file again: nothing written, nothing signed, still clean.
	code, stdout, stderr = e.emitRun(nil, "--file", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("0 written, %d already there", n))
	code, r = e.verifyJSON("--stream", stream)
	require.Equal(t, 0, code, "a clean trail: %+v", r.Findings)
	assert.Equal(t, n+checkpoints, r.Entries)
}

// TestVerifyCleanAfterProducer: goroutines sharing one audit.Producer share
// one chain; `auditproc verify` finds the trail whole.
func TestVerifyCleanAfterProducer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := audit.NewProducer(audit.Config{RedisURL: e.redis.URL(), Keys: e.producerKeys(), Stream: stream,
		Source: "e2e-service", CheckpointEvery: 100, BatchSize: 32}, nil)
	require.NoError(t, err)
	const workers, each = 4, 400
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				pd, err := p.Send(ctx, map[string]any{"n": w*each + i, "worker": w})
				if err != nil {
					errs <- err
					continue
				}
				if r := pd.Result(); r.Err != nil {
					errs <- r.Err
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, p.Close(ctx))
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.EqualValues(t, workers*each, p.Stats().Written)

	sources, checkpoints := e.requireChained(stream)
	require.Len(t, sources, 1, "one chain for every goroutine: %v", sources)
	assert.GreaterOrEqual(t, checkpoints, workers*each/100+1)

	code, r := e.verifyJSON("--stream", stream)
	require.Equal(t, 0, code, "a clean trail: %+v", r.Findings)
	assert.Equal(t, workers*each+checkpoints, r.Entries)
}

// TestVerifyCleanAfterProducerSpool: Redis stops while a Producer runs;
// its events (and checkpoints) go to the spool, signed in chain order, and
// are sent in that order once Redis is back, before the events sent after.
// Every event is stored once, in order, and `auditproc verify` finds the
// trail whole.
func TestVerifyCleanAfterProducerSpool(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := audit.NewProducer(audit.Config{RedisURL: e.redis.URL(), Keys: e.producerKeys(), Stream: stream,
		Source: "e2e-spooler", CheckpointEvery: 50, BatchSize: 16, SpoolDir: filepath.Join(e.dir, "spool"),
		WriteTimeout: 300 * time.Millisecond, RetryDelay: 50 * time.Millisecond}, nil)
	require.NoError(t, err)
	n := 0
	send := func(count int) []audit.Pending {
		var out []audit.Pending
		for range count {
			pd, err := p.Send(ctx, map[string]any{"n": n, "action": "read"})
			require.NoError(t, err)
			out = append(out, pd)
			n++
		}
		return out
	}
	for _, pd := range send(300) {
		require.NoError(t, pd.Result().Err)
		require.False(t, pd.Result().Spooled)
	}

	require.NoError(t, e.redis.Stop(ctx))
	spooled := 0
	for _, pd := range send(300) {
		r := pd.Result()
		require.NoError(t, r.Err)
		if r.Spooled {
			spooled++
		}
	}
	assert.Positive(t, spooled, "Redis away: events are spooled")
	assert.Positive(t, p.Stats().SpoolEvents)

	require.NoError(t, e.redis.Restart(ctx))
	for _, pd := range send(300) {
		require.NoError(t, pd.Result().Err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, p.Close(cctx))
	assert.Zero(t, p.Stats().SpoolEvents, "the spool is drained")

	ns, ids := e.streamNumbers(stream)
	requireOnceInOrder(t, ns, ids, n)
	sources, _ := e.requireChained(stream)
	require.Len(t, sources, 1, "one chain across the outage: %v", sources)

	code, r := e.verifyJSON("--stream", stream)
	require.Equal(t, 0, code, "a clean trail: %+v", r.Findings)
	assert.True(t, r.OK)
}
