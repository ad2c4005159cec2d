package processor

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/internal/streambus"
)

// commitPlan is what one batch of verdicts asks of the sinks and Redis,
// decided by planCommit without any I/O and carried out by applyCommit:
//   - ok: line-sink emits are written and synced first (at least once); then
//     the ack and the stream-sink emits go out in one atomic script;
//   - drop: acked, emits discarded;
//   - reject: dead-lettered with the plugin's message, atomically with the ack;
//   - retry (and every failure): nothing; the entry stays pending and the
//     reclaimer runs it again.
//
// When no entry of the batch emitted to a stream sink or has attempts on
// record, its acks (with the marks of chained entries: see
// streambus.GroupReadArgs.AckMarks) are not a commit of their own: they go to the ack queue and ride with
// the reader's next read. Otherwise the ok and dropped entries are
// committed in one atomic script, which also clears their attempt counts.
// A retry counts an attempt (streambus.Charge).
type commitPlan struct {
	// lines are the emits for line sinks, by sink name.
	lines map[string][][]byte
	// queue holds the acks of the ok and dropped entries when the batch
	// has no stream emits; items is empty then.
	queue pendingAcks
	// items are the ok and dropped entries, with their stream emits, when
	// the batch has stream emits: one atomic Commit.
	items []streambus.Item
	// entries are the entries of items, in the same order.
	entries []*streambus.Entry
	// ok and dropped count the verdicts of items.
	ok, dropped int64
	// adds counts the stream emits of items; sinkOf names the sink of each
	// stream they go to.
	adds   int
	sinkOf map[string]string
	// attempted says an item has attempts on record to clear; marked that
	// an item is chained, its (source, seq) recorded with its ack.
	attempted, marked bool
	// letters are the rejected entries.
	letters []streambus.Letter
	// retries are the entries left pending for another attempt.
	retries []*work
}

// planCommit decides what to do with a batch of verdicts, once deliver
// wrote the emits for external sinks. It is a pure
// function of the batch and the sinks.
func planCommit(batch []work, sinks map[string]*sink) commitPlan {
	var plan commitPlan
	for i := range batch {
		w := &batch[i]
		r := &w.result
		switch r.Verdict {
		case abi.VerdictOK:
			it := streambus.Item{ID: w.entry.ID, Attempted: w.entry.Attempts > 0, Mark: w.entry.Mark()}
			for _, e := range r.Emits {
				s := sinks[e.Sink]
				if s.dest != nil {
					continue // written and confirmed by deliver
				}
				if s.kind == SinkStream {
					// checkEmits stamped every emit of an ok result.
					it.Adds = append(it.Adds, streambus.Add{Stream: s.stream, Event: e.Event, Stamped: true})
					if plan.sinkOf == nil {
						plan.sinkOf = map[string]string{}
					}
					plan.sinkOf[s.stream] = e.Sink
					plan.adds++
					continue
				}
				if plan.lines == nil {
					plan.lines = map[string][][]byte{}
				}
				plan.lines[e.Sink] = append(plan.lines[e.Sink], e.Event)
			}
			plan.items = append(plan.items, it)
			plan.entries = append(plan.entries, w.entry)
			plan.ok++
			plan.attempted = plan.attempted || it.Attempted
			plan.marked = plan.marked || it.Mark.Source != ""
		case abi.VerdictDrop:
			plan.items = append(plan.items, streambus.Item{ID: w.entry.ID, Attempted: w.entry.Attempts > 0, Mark: w.entry.Mark()})
			plan.entries = append(plan.entries, w.entry)
			plan.dropped++
			plan.attempted = plan.attempted || w.entry.Attempts > 0
			plan.marked = plan.marked || w.entry.Source != ""
		case abi.VerdictReject:
			plan.letters = append(plan.letters, w.entry.Letter(streambus.Reason{
				Kind: streambus.ReasonRejected, Detail: fmt.Sprintf("plugin %q: %s", r.Plugin, r.Message),
			}))
		default:
			plan.retries = append(plan.retries, w)
		}
	}
	if len(plan.items) > 0 && plan.adds == 0 && !plan.attempted {
		// Acks only: they ride with the reader's next read (see ackQueue);
		// the entries count as processed once acknowledged. Chained ones
		// carry their marks, recorded with the ack.
		ids := make([]string, len(plan.items))
		var marks []streambus.Mark
		if plan.marked {
			marks = make([]streambus.Mark, len(plan.items))
		}
		for i := range plan.items {
			ids[i] = plan.items[i].ID
			if marks != nil {
				marks[i] = plan.items[i].Mark
			}
		}
		plan.queue = pendingAcks{ids: ids, marks: marks, ok: plan.ok, dropped: plan.dropped}
		plan.items, plan.entries, plan.ok, plan.dropped = nil, nil, 0, 0
	}
	return plan
}

// applyCommit carries out a plan. It reports whether it put acks in the
// queue: those entries stay held until the acks are sent.
func (p *Processor) applyCommit(ctx context.Context, plan *commitPlan) (queued bool) {
	for _, w := range plan.retries {
		r := &w.result
		p.outcomes.retried()
		p.failures.set(w.entry.ID, failure{plugin: r.Plugin, message: r.Message})
		if ctx.Err() != nil {
			continue // shutdown timed out: left pending, said once by Run
		}
		p.log.Warn("audit_event_retry_scheduled",
			slog.String("entry_id", w.entry.ID), slog.String("event_id", w.entry.EventID),
			slog.String("plugin", r.Plugin), slog.String("message", r.Message),
			slog.Int64("deliveries", w.entry.Deliveries))
	}
	p.charge(ctx, plan.retries)
	p.failures.forget(plan)
	for name, evs := range plan.lines {
		s := p.sinks[name]
		if err := p.retrySink(ctx, s, func() error {
			start := time.Now()
			defer func() { p.metrics.SinkLatency.WithLabelValues(name).Observe(time.Since(start).Seconds()) }()
			return s.line.write(evs)
		}); err != nil {
			return false // nothing acked: every entry of the batch is redelivered
		}
		p.metrics.SinkWrites.WithLabelValues(name).Add(float64(len(evs)))
		p.outcomes.emitted(name, len(evs))
	}
	if len(plan.queue.ids) > 0 {
		p.acks.put(plan.queue)
		queued = true
	}
	if len(plan.items) > 0 {
		var res streambus.CommitResult
		err := p.retryRedis(ctx, "commit", func() error {
			var err error
			res, err = p.bus.Commit(ctx, p.cfg.Stream, p.cfg.Group, plan.items...)
			return err
		})
		if err != nil {
			return queued
		}
		p.gaps.observe(res.Marks)
		if len(res.Replayed) > 0 {
			// Another entry took the (source, seq) after the lookup: a
			// replay that reached the plugins (the lookup failed, or state
			// was changed meanwhile); its emits were not appended.
			for _, i := range res.Replayed {
				plan.letters = append(plan.letters, p.replayed(ctx, *plan.entries[i], "taken by another entry id before the commit"))
			}
		}
		p.outcomes.acked(len(plan.items)-len(res.Replayed), res.Acked, plan.ok, plan.dropped)
		for i, it := range plan.items {
			for j := range res.IDs[i] {
				p.outcomes.emitted(plan.sinkOf[it.Adds[j].Stream], 1)
			}
		}
		p.log.Debug("audit_events_acknowledged", slog.Int("count", len(plan.items)), slog.Int64("acked", res.Acked), slog.Int("emitted", plan.adds))
	}
	p.deadLetter(ctx, plan.letters)
	return queued
}

// commitLoop commits verdicts in batches: whatever the workers finished
// since the last commit goes out in one step. Acks the reader has not
// taken after ackDelay, and those left at the end, it sends itself.
func (p *Processor) commitLoop(ctx context.Context, results <-chan *[]work) {
	defer p.flushAcks(ctx)
	flush := time.NewTimer(ackDelay)
	flush.Stop()
	armed := false
	batch := make([]work, 0, p.cfg.BatchSize)
	for {
		var first *[]work
		select {
		case <-flush.C:
			armed = false
			p.flushAcks(ctx)
			continue
		case w, ok := <-results:
			if !ok {
				return
			}
			first = w
		}
		batch = append(batch[:0], *first...)
		p.release(first)
	more:
		for len(batch) < p.cfg.BatchSize {
			select {
			case w, ok := <-results:
				if !ok {
					break more
				}
				batch = append(batch, *w...)
				p.release(w)
			default:
				break more
			}
		}
		p.deliver(ctx, batch)
		plan := planCommit(batch, p.sinks)
		queued := p.applyCommit(ctx, &plan)
		p.uncommitted.Add(-int64(len(batch)))
		// Entries whose acks wait in the queue stay held until the XACK
		// went out: still pending in Redis, they must not be claimed.
		p.held.removeWork(batch, queued)
		clear(batch) // drop references to entries and emits until reused
		if !armed && p.acks.waiting() {
			flush.Reset(ackDelay)
			armed = true
		}
	}
}

// charge counts an attempt for each retried entry, before it is let go.
func (p *Processor) charge(ctx context.Context, retries []*work) {
	if len(retries) == 0 || ctx.Err() != nil {
		return // a shutdown that cut runs short charges nothing
	}
	ids := make([]string, len(retries))
	for i, w := range retries {
		ids[i] = w.entry.ID
	}
	_ = p.retryRedis(ctx, "charge", func() error {
		_, err := p.bus.Charge(ctx, p.cfg.Stream, p.cfg.Group, ids...)
		return err
	})
}
