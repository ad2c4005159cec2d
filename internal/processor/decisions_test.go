package processor

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/streambus"
)

func entries(n int) []streambus.Entry {
	return newFakeBus("s", n).entries
}

func result(v abi.Verdict, plugin, message string, emits ...host.Emit) host.Result {
	return host.Result{Verdict: v, Plugin: plugin, Message: message, Emits: emits}
}

func TestPlanCommit(t *testing.T) {
	sinks := map[string]*sink{
		"alerts":  {name: "alerts", kind: SinkStream, stream: "s:alerts"},
		"archive": {name: "archive", kind: SinkFile},
	}
	es := entries(5)
	ok := result(abi.VerdictOK, "", "")
	drop := result(abi.VerdictDrop, "filter", "")
	reject := result(abi.VerdictReject, "schema", "no actor")
	retry := result(abi.VerdictRetry, "forward", "downstream busy")
	alert := result(abi.VerdictOK, "", "", host.Emit{Plugin: "detect", Sink: "alerts", Event: []byte(`{"a":1}`)})
	archived := result(abi.VerdictOK, "", "", host.Emit{Plugin: "forward", Sink: "archive", Event: []byte(`{"b":2}`)})

	tests := []struct {
		name    string
		results []host.Result
		check   func(t *testing.T, plan commitPlan)
	}{
		{"acks only go to the queue", []host.Result{ok, drop, ok}, func(t *testing.T, plan commitPlan) {
			assert.Equal(t, pendingAcks{ids: []string{"1-0", "2-0", "3-0"}, ok: 2, dropped: 1}, plan.queue)
			assert.Empty(t, plan.items, "no commit script for plain acks")
			assert.Empty(t, plan.letters)
			assert.Empty(t, plan.retries)
		}},
		{"a stream emit commits the whole batch atomically", []host.Result{ok, alert, drop}, func(t *testing.T, plan commitPlan) {
			assert.Empty(t, plan.queue.ids)
			require.Len(t, plan.items, 3)
			assert.Equal(t, []streambus.Add{{Stream: "s:alerts", Event: []byte(`{"a":1}`), Stamped: true}}, plan.items[1].Adds)
			assert.Empty(t, plan.items[0].Adds)
			assert.EqualValues(t, 2, plan.ok)
			assert.EqualValues(t, 1, plan.dropped)
			assert.Equal(t, 1, plan.adds)
			assert.Equal(t, map[string]string{"s:alerts": "alerts"}, plan.sinkOf)
		}},
		{"line emits are written before the acks", []host.Result{archived, ok}, func(t *testing.T, plan commitPlan) {
			assert.Equal(t, map[string][][]byte{"archive": {[]byte(`{"b":2}`)}}, plan.lines)
			assert.Equal(t, []string{"1-0", "2-0"}, plan.queue.ids)
		}},
		{"reject is a dead letter with the plugin's message", []host.Result{reject, ok}, func(t *testing.T, plan commitPlan) {
			require.Len(t, plan.letters, 1)
			l := plan.letters[0]
			assert.Equal(t, "1-0", l.ID)
			assert.Equal(t, streambus.Reason{Kind: streambus.ReasonRejected, Detail: `plugin "schema": no actor`}, l.Reason)
			assert.Equal(t, `rejected: plugin "schema": no actor`, l.Reason.String(), "the stored text is unchanged")
			assert.Equal(t, []string{"2-0"}, plan.queue.ids)
		}},
		{"retry leaves the entry pending", []host.Result{retry, drop}, func(t *testing.T, plan commitPlan) {
			require.Len(t, plan.retries, 1)
			assert.Equal(t, "1-0", plan.retries[0].entry.ID)
			assert.Equal(t, []string{"2-0"}, plan.queue.ids)
			assert.Empty(t, plan.letters)
		}},
		{"nothing to do", nil, func(t *testing.T, plan commitPlan) {
			assert.Equal(t, commitPlan{}, plan)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch := make([]work, len(tt.results))
			for i, r := range tt.results {
				batch[i] = work{entry: &es[i], result: r}
			}
			tt.check(t, planCommit(batch, sinks))
		})
	}
}

// fakeProcessor is a processor on a fake bus, with no plugins.
func fakeProcessor(t *testing.T, b *fakeBus, cfg Config) *Processor {
	t.Helper()
	cfg.Stream, cfg.Group, cfg.Consumer, cfg.DeadLetter = "s", "g", "c", "s:dead"
	p, err := New(cfg, nil, b, host.NewPipeline(), nil)
	require.NoError(t, err)
	return p
}

// TestDecisionsAgainstAFakeBus checks what the processor decides for each
// kind of entry and verdict, against an in-memory bus.
func TestDecisionsAgainstAFakeBus(t *testing.T) {
	ctx := context.Background()

	t.Run("a drained stream is acked once and Run returns", func(t *testing.T) {
		b := newFakeBus("s", 100)
		p := fakeProcessor(t, b, Config{BatchSize: 16, StopWhenIdle: true})
		require.NoError(t, p.Run(ctx))
		assert.Empty(t, b.pendingIDs())
		assert.Len(t, b.acked, 100)
		assert.EqualValues(t, 100, p.Stats().Processed.Load())
		assert.Zero(t, p.Stats().LateAcks.Load())
		assert.Empty(t, b.letters)
		assert.Empty(t, b.commits, "plain acks, no commit script")
	})

	t.Run("verdicts", func(t *testing.T) {
		b := newFakeBus("s", 4)
		p := fakeProcessor(t, b, Config{})
		batch := b.deliver(b.entries, "c")
		p.held.take(batch.Entries)
		verdicts := []work{
			{entry: &batch.Entries[0], result: result(abi.VerdictOK, "", "")},
			{entry: &batch.Entries[1], result: result(abi.VerdictDrop, "f", "")},
			{entry: &batch.Entries[2], result: result(abi.VerdictReject, "schema", "no actor")},
			{entry: &batch.Entries[3], result: result(abi.VerdictRetry, "forward", "busy")},
		}
		plan := planCommit(verdicts, p.sinks)
		queued := p.applyCommit(ctx, &plan)
		require.True(t, queued)
		p.held.removeWork(verdicts, queued)
		assert.Equal(t, []string{"1-0", "2-0", "4-0"}, b.pendingIDs(), "acks wait in the queue; the reject is dead-lettered")
		assert.ElementsMatch(t, []string{"1-0", "2-0"}, p.held.list(), "queued entries stay held, the others are let go")
		assert.EqualValues(t, 1, b.attempts["4-0"], "a retry is an attempt")
		p.flushAcks(ctx)
		assert.Equal(t, []string{"4-0"}, b.pendingIDs(), "the retried entry stays pending")
		require.Len(t, b.letters, 1)
		assert.Equal(t, streambus.ReasonRejected, b.letters[0].Reason.Kind)
		st := p.Stats()
		assert.EqualValues(t, 1, st.Processed.Load())
		assert.EqualValues(t, 1, st.Dropped.Load())
		assert.EqualValues(t, 1, st.Rejected.Load())
		assert.EqualValues(t, 1, st.Retried.Load())
		assert.InDelta(t, 1, testutil.ToFloat64(p.metrics.DeadLettered.WithLabelValues("rejected")), 0)
		assert.Empty(t, p.held.list())

		// Claims count deliveries, not attempts: the entry runs again.
		b.pending["4-0"].deliveries = 10
		claimed, _ := b.XAutoClaim(ctx, streambus.AutoClaimArgs{})
		run := p.triage(ctx, claimed, true)
		require.Len(t, run, 1)
		assert.EqualValues(t, 1, run[0].Attempts)
		// It succeeds: committed by the script, which clears its count.
		w := []work{{entry: &run[0], result: result(abi.VerdictOK, "", "")}}
		plan = planCommit(w, p.sinks)
		assert.False(t, p.applyCommit(ctx, &plan))
		p.held.removeWork(w, false)
		require.Len(t, b.commits, 1)
		assert.Equal(t, []streambus.Item{{ID: "4-0", Attempted: true}}, b.commits[0])
		assert.Empty(t, b.pendingIDs())
		assert.Empty(t, b.attempts)
	})

	t.Run("past its attempts an entry is dead-lettered with its last failure", func(t *testing.T) {
		b := newFakeBus("s", 1)
		p := fakeProcessor(t, b, Config{MaxDeliveries: 2})
		for attempt := range 2 {
			batch := b.deliver(b.entries, "c")
			if attempt > 0 {
				batch, _ = b.XAutoClaim(ctx, streambus.AutoClaimArgs{})
			}
			run := p.triage(ctx, batch, attempt > 0)
			require.Len(t, run, 1)
			w := []work{{entry: &run[0], result: result(abi.VerdictRetry, "forward", "busy")}}
			plan := planCommit(w, p.sinks)
			p.applyCommit(ctx, &plan)
			p.held.removeWork(w, false)
		}
		claimed, _ := b.XAutoClaim(ctx, streambus.AutoClaimArgs{})
		assert.Empty(t, p.triage(ctx, claimed, true))
		require.Len(t, b.letters, 1)
		assert.Equal(t, streambus.Reason{
			Kind:   streambus.ReasonMaxDeliveries,
			Detail: `failed 2 attempts (limit 2), delivered 4 times; last failure: plugin "forward": busy`,
		}, b.letters[0].Reason)
		assert.EqualValues(t, 1, p.Stats().Exhausted.Load())
		assert.Empty(t, p.held.list())
	})

	t.Run("tampered entries stay pending until their budget is spent", func(t *testing.T) {
		b := newFakeBus("s", 3)
		b.tamper(1)
		p := fakeProcessor(t, b, Config{MaxDeliveries: 2})
		run := p.triage(ctx, b.deliver(b.entries, "c"), false)
		assert.Len(t, run, 2, "never handed to a plugin")
		assert.Contains(t, b.pendingIDs(), "2-0")
		for range 2 {
			claimed, _ := b.XAutoClaim(ctx, streambus.AutoClaimArgs{})
			claimed.Entries = nil
			p.triage(ctx, claimed, true)
		}
		require.Len(t, b.letters, 1)
		assert.Equal(t, streambus.Reason{Kind: "signature_mismatch"}, b.letters[0].Reason)
		assert.EqualValues(t, 3, p.Stats().Tampered.Load(), "every delivery counts")
		assert.EqualValues(t, 1, p.Stats().TamperedEntries())
		assert.EqualValues(t, 1, p.Stats().TamperedDLQ.Load())
	})

	t.Run("held entries are not run again when claimed", func(t *testing.T) {
		b := newFakeBus("s", 3)
		p := fakeProcessor(t, b, Config{})
		batch := b.deliver(b.entries, "c")
		p.held.take(batch.Entries[:2])
		claimed, _ := b.XAutoClaim(ctx, streambus.AutoClaimArgs{})
		run := p.triage(ctx, claimed, true)
		require.Len(t, run, 1)
		assert.Equal(t, "3-0", run[0].ID)
	})
}

// TestSinkErrorsAreNotRedisErrors: a line sink that cannot write (a full
// disk) is retried and counted as a sink error, not as a Redis error, and
// the processor stays ready.
func TestSinkErrorsAreNotRedisErrors(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("needs /dev/full")
	}
	b := newFakeBus("s", 1)
	p := fakeProcessor(t, b, Config{Sinks: map[string]Sink{"archive": {Type: SinkFile, Path: "/dev/full"}}})
	t.Cleanup(func() { closeSinks(p.sinks) })
	p.setReady(true)
	batch := b.deliver(b.entries, "c")
	verdicts := []work{{entry: &batch.Entries[0], result: result(abi.VerdictOK, "", "",
		host.Emit{Plugin: "forward", Sink: "archive", Event: []byte(`{"b":2}`)})}}
	plan := planCommit(verdicts, p.sinks)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	assert.False(t, p.applyCommit(ctx, &plan))
	assert.GreaterOrEqual(t, testutil.ToFloat64(p.metrics.SinkErrors.WithLabelValues("archive")), 2.0, "retried")
	assert.Zero(t, testutil.CollectAndCount(p.metrics.RedisErrors), "no Redis error")
	assert.True(t, p.Ready(), "a full disk does not make /readyz fail")
	assert.Equal(t, []string{"1-0"}, b.pendingIDs(), "nothing acked")
}
