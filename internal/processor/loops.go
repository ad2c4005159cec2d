package processor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/streambus"
)

// feeder hands entries to the workers. Sends use the work context, so that
// entries already read are still processed during a graceful shutdown.
type feeder struct {
	jobs     chan<- []streambus.Entry
	inflight *atomic.Int64
	ids      *idSet // ids of the entries in flight
	sendCtx  context.Context
	workers  int
}

// maxChunk bounds the entries a worker takes at once: large enough that a
// channel operation is amortised over many entries, small enough that a
// batch is shared between the workers and its first results are committed
// early.
const maxChunk = 32

func (f feeder) send(entries []streambus.Entry) bool {
	chunk := min(maxChunk, max(1, (len(entries)+f.workers-1)/f.workers))
	for lo := 0; lo < len(entries); lo += chunk {
		c := entries[lo:min(lo+chunk, len(entries))]
		f.inflight.Add(int64(len(c)))
		f.ids.add(c)
		select {
		case f.jobs <- c:
		case <-f.sendCtx.Done():
			f.inflight.Add(-int64(len(c)))
			f.ids.remove(c)
			return false // left pending: redelivered after a restart or reclaimed
		}
	}
	return true
}

// readLoop first re-reads this consumer's own pending entries (a previous
// run under the same name stopped before acking them), then reads new ones
// with readers reads in flight until ctx ends.
func (p *Processor) readLoop(ctx context.Context, feed feeder, stop context.CancelFunc) {
	cursor := "0"
	for ctx.Err() == nil {
		batch, ok := p.read(ctx, cursor, nil)
		if !ok {
			return
		}
		if batch.Len() == 0 {
			break
		}
		if !feed.send(p.triage(ctx, batch, true)) {
			return
		}
		cursor = batch.Cursor
	}
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() { p.readNew(ctx, feed, stop) })
	}
	wg.Wait()
}

// readers is how many reads of new entries are in flight at once: while
// this process verifies and hands on one batch, Redis prepares the next
// instead of waiting for the request (a single read loop leaves Redis and
// the reader idle in turn). Entries of two batches reach the workers
// interleaved; their order was never kept past the workers anyway.
const readers = 2

// readNew reads entries never delivered to the group, sending the queued
// acks with each read, until ctx ends or (StopWhenIdle) the stream is
// drained.
func (p *Processor) readNew(ctx context.Context, feed feeder, stop context.CancelFunc) {
	for ctx.Err() == nil {
		acks := p.acks.take()
		batch, ok := p.read(ctx, ">", &acks)
		if !ok {
			p.acks.put(acks) // any not sent: for the committer to send
			return
		}
		if batch.Len() == 0 {
			if p.cfg.StopWhenIdle && feed.inflight.Load() == 0 && p.drained(ctx) {
				p.log.Info("stream_drained", slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group))
				stop()
				return
			}
			continue
		}
		if !feed.send(p.triage(ctx, batch, false)) {
			return
		}
	}
}

// read reads one batch, acknowledging acks (if not nil) in the same round
// trip, retrying through Redis outages and recreating a deleted stream or
// group. Acks that went through are accounted for and cleared from acks,
// also when the read then failed. ok is false once ctx ended.
func (p *Processor) read(ctx context.Context, id string, acks *pendingAcks) (streambus.Batch, bool) {
	var batch streambus.Batch
	err := p.retry(ctx, "xreadgroup", func() error {
		// Every read has a deadline of its own, whatever the client and
		// the network do: a read stuck on a dead connection fails and is
		// retried on a fresh one.
		rctx, cancel := context.WithTimeout(ctx, p.cfg.Block+readGrace)
		defer cancel()
		// A read that sends acks does not wait: they are accounted for
		// when it returns, and an idle stream would hold that up.
		block := p.cfg.Block
		if len(ackIDs(acks)) > 0 {
			block = -1
		}
		var err error
		batch, err = p.bus.XReadGroup(rctx, streambus.GroupReadArgs{
			Stream: p.cfg.Stream, Group: p.cfg.Group, Consumer: p.cfg.Consumer,
			ID: id, Count: int64(p.cfg.BatchSize), Block: block, Ack: ackIDs(acks),
		})
		if batch.AcksSent {
			p.acked(*acks, batch.Acked)
			*acks = pendingAcks{}
		}
		p.lastRead.Store(time.Now().UnixNano())
		if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
			p.recreateGroup(ctx)
		}
		return err
	})
	return batch, err == nil
}

func ackIDs(a *pendingAcks) []string {
	if a == nil {
		return nil
	}
	return a.ids
}

// recreateGroup answers NOGROUP: someone deleted the stream or the group.
// That is an integrity alarm (pending entries were lost with the group);
// the group is created again so processing goes on.
func (p *Processor) recreateGroup(ctx context.Context) {
	created, err := p.bus.XGroupCreate(ctx, p.cfg.Stream, p.cfg.Group, "0")
	if err == nil && created {
		p.log.Error("consumer_group_recreated",
			slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group),
			slog.String("detail", "the stream or the consumer group was deleted while auditproc ran; entries pending at that moment are unaccounted for"))
		p.metrics.GroupRecreated.Inc()
	}
}

// drained reports whether nothing is pending for the group.
func (p *Processor) drained(ctx context.Context) bool {
	if p.rdb == nil {
		return false
	}
	info, err := p.rdb.XPending(ctx, p.cfg.Stream, p.cfg.Group).Result()
	return err == nil && info.Count == 0
}

// reclaimLoop claims entries idle longer than MinIdle, from any consumer of
// the group (this one's own retries included), and runs them again.
func (p *Processor) reclaimLoop(ctx context.Context, feed feeder) {
	t := time.NewTicker(p.cfg.ReclaimInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cursor := "0-0"
		for {
			var batch streambus.Batch
			err := p.retry(ctx, "xautoclaim", func() error {
				rctx, cancel := context.WithTimeout(ctx, readGrace)
				defer cancel()
				var err error
				batch, err = p.bus.XAutoClaim(rctx, streambus.AutoClaimArgs{
					Stream: p.cfg.Stream, Group: p.cfg.Group, Consumer: p.cfg.Consumer,
					MinIdle: p.cfg.MinIdle, Start: cursor, Count: int64(p.cfg.BatchSize),
				})
				if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
					p.recreateGroup(ctx)
				}
				return err
			})
			if err != nil {
				return
			}
			if n := len(batch.Entries) + len(batch.Tampered); n > 0 {
				p.stats.Reclaimed.Add(int64(n))
				p.metrics.Reclaimed.Add(float64(n))
			}
			if !feed.send(p.triage(ctx, batch, true)) {
				return
			}
			cursor = batch.Cursor
			if cursor == "" || cursor == "0-0" {
				break
			}
		}
	}
}

// triage accounts for a batch and returns the entries to run: entries past
// their delivery budget and tampered entries past it are dead-lettered;
// entries deleted while pending raise the integrity alarm; tampered entries
// under the budget stay pending (the reclaimer brings them back until the
// budget is spent, so they are kept for forensics without looping forever).
func (p *Processor) triage(ctx context.Context, batch streambus.Batch, redelivered bool) []streambus.Entry {
	if redelivered {
		// The reclaimer also claims this consumer's own entries once they
		// are idle long enough, including entries still queued or running
		// here: those are not run twice nor dead-lettered for it.
		batch.Entries = p.inflightIDs.without(batch.Entries)
	}
	n := len(batch.Entries) + len(batch.Tampered)
	p.metrics.Read.Add(float64(n))
	p.metrics.Verified.Add(float64(len(batch.Entries)))
	for _, t := range batch.Tampered {
		p.metrics.Tampered.WithLabelValues(t.Reason).Inc()
		p.stats.addTampered(t.ID)
	}
	if len(batch.Deleted) > 0 {
		p.stats.DeletedAlarm.Add(int64(len(batch.Deleted)))
		p.metrics.DeletedPending.Add(float64(len(batch.Deleted)))
		p.log.Error("pending_entries_deleted",
			slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group),
			slog.Any("entry_ids", batch.Deleted),
			slog.String("detail", "entries were deleted or trimmed from the stream before they were processed"))
		// A history read keeps deleted ids pending until acked; nothing
		// remains to process, so clear them.
		_ = p.retry(ctx, "xack", func() error {
			_, err := p.bus.XAck(ctx, p.cfg.Stream, p.cfg.Group, batch.Deleted...)
			return err
		})
	}
	if len(batch.Checkpoints) > 0 {
		// Checkpoints of chained sources prove the trail whole to a reader
		// of the stream; they carry no event for the plugins.
		ids := make([]string, len(batch.Checkpoints))
		for i, c := range batch.Checkpoints {
			ids[i] = c.ID
		}
		_ = p.retry(ctx, "xack", func() error {
			_, err := p.bus.XAck(ctx, p.cfg.Stream, p.cfg.Group, ids...)
			return err
		})
	}
	var letters []streambus.Letter
	for _, t := range batch.Tampered {
		if t.Deliveries > int64(p.cfg.MaxDeliveries) {
			letters = append(letters, t.Letter())
		}
	}
	run := batch.Entries
	if redelivered {
		run = run[:0:0]
		for _, e := range batch.Entries {
			if e.Deliveries <= int64(p.cfg.MaxDeliveries) {
				run = append(run, e)
				continue
			}
			reason := fmt.Sprintf("max_deliveries: delivered %d times (limit %d)", e.Deliveries, p.cfg.MaxDeliveries)
			if f, ok := p.failures.take(e.ID); ok {
				reason += fmt.Sprintf("; last failure: plugin %q: %s", f.plugin, f.message)
			}
			letters = append(letters, e.Letter(reason))
		}
	}
	p.deadLetter(ctx, letters)
	return run
}

// deadLetter moves letters to the dead-letter stream (atomically with their
// acks), retrying through outages.
func (p *Processor) deadLetter(ctx context.Context, letters []streambus.Letter) {
	if len(letters) == 0 {
		return
	}
	var ids []string
	err := p.retry(ctx, "dead_letter", func() error {
		var err error
		ids, err = p.bus.DeadLetter(ctx, p.cfg.Stream, p.cfg.Group, p.cfg.DeadLetter, letters...)
		return err
	})
	if err != nil {
		return // still pending: dead-lettered after the restart
	}
	for i, l := range letters {
		if ids[i] == "" {
			continue // finished elsewhere meanwhile: not moved
		}
		label := reasonLabel(l.Reason)
		p.metrics.DeadLettered.WithLabelValues(label).Inc()
		switch label {
		case "rejected":
			p.stats.Rejected.Add(1)
		case "max_deliveries":
			p.stats.Exhausted.Add(1)
		default:
			p.stats.TamperedDLQ.Add(1)
		}
	}
}

// reasonLabel keeps metric label values few: the reason up to its first ':'.
func reasonLabel(reason string) string {
	for i := 0; i < len(reason); i++ {
		if reason[i] == ':' {
			return reason[:i]
		}
	}
	return reason
}

// commitLoop commits verdicts in batches: whatever the workers finished
// since the last commit goes out in one atomic step. Acks the reader has
// not taken after ackDelay, and those left at the end, it sends itself.
func (p *Processor) commitLoop(ctx context.Context, results <-chan *[]work, inflight *atomic.Int64) {
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
		queued := p.commit(ctx, batch)
		inflight.Add(-int64(len(batch)))
		// Entries whose acks wait in the queue stay in flight until the
		// XACK went out: still pending in Redis, they must not be claimed.
		p.inflightIDs.removeWork(batch, queued)
		clear(batch) // drop references to entries and emits until reused
		if !armed && p.acks.waiting() {
			flush.Reset(ackDelay)
			armed = true
		}
	}
}

// ackDelay is how long finished entries whose commit is a plain XACK wait
// for the reader's next read before the committer sends them itself: a few
// reads' time under load, short next to anything an operator watches, and
// the bound when the reader waits in a blocking read on an idle stream.
const ackDelay = 5 * time.Millisecond

// ackQueue holds finished entries whose commit is acks only (no stream
// emits: drop verdicts, ok verdicts of pipelines without stream sinks). The
// read loop sends them as one XACK pipelined with its next XREADGROUP, as a
// plain consumer loop does, which spares the committer a round trip per
// batch; the committer sends what waited longer than ackDelay, and what is
// left at shutdown. Entries are acknowledged only after their pipeline
// finished either way; one whose ack is lost (Redis down until the shutdown
// timeout) stays pending and is delivered again.
type ackQueue struct {
	mu      sync.Mutex
	pending pendingAcks
}

// pendingAcks are entry ids to acknowledge, with how many of them ended ok
// and dropped, counted once acknowledged.
type pendingAcks struct {
	ids         []string
	ok, dropped int64
}

func (q *ackQueue) put(a pendingAcks) {
	q.mu.Lock()
	q.pending.ids = append(q.pending.ids, a.ids...)
	q.pending.ok += a.ok
	q.pending.dropped += a.dropped
	q.mu.Unlock()
}

// take empties the queue and returns what it held.
func (q *ackQueue) take() pendingAcks {
	q.mu.Lock()
	a := q.pending
	q.pending = pendingAcks{}
	q.mu.Unlock()
	return a
}

func (q *ackQueue) waiting() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending.ids) > 0
}

// flushAcks sends the queued acks in a round trip of their own.
func (p *Processor) flushAcks(ctx context.Context) {
	a := p.acks.take()
	if len(a.ids) == 0 {
		return
	}
	var acked int64
	err := p.retry(ctx, "commit", func() error {
		var err error
		acked, err = p.bus.XAck(ctx, p.cfg.Stream, p.cfg.Group, a.ids...)
		return err
	})
	if err != nil {
		return // shutdown timed out: left pending, said once by Run
	}
	p.acked(a, acked)
}

// acked accounts for acks sent: acked of a.ids were still pending.
func (p *Processor) acked(a pendingAcks, acked int64) {
	p.inflightIDs.removeIDs(a.ids)
	p.metrics.Acked.Add(float64(acked))
	if late := int64(len(a.ids)) - acked; late > 0 {
		// Finished elsewhere meanwhile (claimed by another replica), or
		// a retried ack whose first attempt went through.
		p.stats.LateAcks.Add(late)
		p.metrics.LateAcks.Add(float64(late))
	}
	p.stats.Processed.Add(a.ok)
	p.stats.Dropped.Add(a.dropped)
	p.log.Debug("audit_events_acknowledged", slog.Int("count", len(a.ids)), slog.Int64("acked", acked), slog.Int("emitted", 0))
}

// commit applies one batch of verdicts:
//   - ok: line-sink emits are written and synced first (at least once); then
//     the acks and the stream-sink emits go out in one atomic script;
//   - drop: acked, emits discarded;
//   - reject: dead-lettered with the plugin's message, atomically with the ack;
//   - retry: nothing; the entry stays pending and the reclaimer runs it again.
//
// It returns the ids it put in the ack queue (acks only), which stay in
// flight until acknowledged.
func (p *Processor) commit(ctx context.Context, batch []work) (queued map[string]struct{}) {
	var (
		items   []streambus.Item
		lines   = map[string][][]byte{}
		letters []streambus.Letter
		ok      int64
		dropped int64
		adds    int
		sinkOf  = map[string]string{} // stream -> sink name, for the counters
	)
	for _, w := range batch {
		r := &w.result
		switch r.Verdict {
		case abi.VerdictOK:
			it := streambus.Item{ID: w.entry.ID}
			for _, e := range r.Emits {
				s := p.cfg.Sinks[e.Sink]
				if s.Type == "stream" {
					// checkEmits stamped every emit of an ok result.
					it.Adds = append(it.Adds, streambus.Add{Stream: s.Stream, Event: e.Event, Stamped: true})
					sinkOf[s.Stream] = e.Sink
					adds++
				} else {
					lines[e.Sink] = append(lines[e.Sink], e.Event)
				}
			}
			items = append(items, it)
			ok++
			p.failures.take(w.entry.ID)
		case abi.VerdictDrop:
			items = append(items, streambus.Item{ID: w.entry.ID})
			dropped++
			p.failures.take(w.entry.ID)
		case abi.VerdictReject:
			letters = append(letters, w.entry.Letter(fmt.Sprintf("rejected: plugin %q: %s", r.Plugin, r.Message)))
			p.failures.take(w.entry.ID)
		default:
			p.stats.Retried.Add(1)
			p.failures.set(w.entry.ID, failure{plugin: r.Plugin, message: r.Message})
			if ctx.Err() != nil {
				continue // shutdown timed out: left pending, said once by Run
			}
			p.log.Warn("audit_event_retry_scheduled",
				slog.String("entry_id", w.entry.ID), slog.String("event_id", w.entry.EventID),
				slog.String("plugin", r.Plugin), slog.String("message", r.Message),
				slog.Int64("deliveries", w.entry.Deliveries))
		}
	}
	for sink, evs := range lines {
		err := p.retry(ctx, "sink_"+sink, func() error { return p.lines[sink].write(evs) })
		if err != nil {
			return // nothing acked: every entry of the batch is redelivered
		}
		p.stats.addEmitted(sink, int64(len(evs)))
		p.metrics.Emitted.WithLabelValues(sink).Add(float64(len(evs)))
	}
	if len(items) > 0 && adds == 0 {
		// Acks only: they ride with the reader's next read (see ackQueue);
		// the entries count as processed once acknowledged.
		ids := make([]string, len(items))
		queued = make(map[string]struct{}, len(items))
		for i := range items {
			ids[i] = items[i].ID
			queued[ids[i]] = struct{}{}
		}
		p.acks.put(pendingAcks{ids: ids, ok: ok, dropped: dropped})
	} else if len(items) > 0 {
		var res streambus.CommitResult
		err := p.retry(ctx, "commit", func() error {
			var err error
			res, err = p.bus.Commit(ctx, p.cfg.Stream, p.cfg.Group, items...)
			return err
		})
		if err != nil {
			return
		}
		p.metrics.Acked.Add(float64(res.Acked))
		if late := int64(len(items)) - res.Acked; late > 0 {
			// Finished elsewhere meanwhile (claimed by another replica), or
			// a retried commit whose first attempt went through.
			p.stats.LateAcks.Add(late)
			p.metrics.LateAcks.Add(float64(late))
		}
		p.stats.Processed.Add(ok)
		p.stats.Dropped.Add(dropped)
		for i, it := range items {
			for j := range res.IDs[i] {
				p.stats.addEmitted(sinkOf[it.Adds[j].Stream], 1)
				p.metrics.Emitted.WithLabelValues(sinkOf[it.Adds[j].Stream]).Inc()
			}
		}
		p.log.Debug("audit_events_acknowledged", slog.Int("count", len(items)), slog.Int64("acked", res.Acked), slog.Int("emitted", adds))
	}
	p.deadLetter(ctx, letters)
	return queued
}

// observers records results' per-plugin verdicts and latencies, with the
// metric children looked up once per plugin rather than once per event.
type observers map[string]*pluginObserver

type pluginObserver struct {
	latency  prometheus.Observer
	verdicts [4]prometheus.Counter // by abi.Verdict: ok, drop, retry, reject
}

func newObservers(m *Metrics, pipeline *host.Pipeline) observers {
	o := observers{}
	for _, pl := range pipeline.Plugins() {
		po := &pluginObserver{latency: m.PluginLatency.WithLabelValues(pl.Name())}
		for v := range po.verdicts {
			po.verdicts[v] = m.Verdicts.WithLabelValues(pl.Name(), abi.Verdict(v).String())
		}
		o[pl.Name()] = po
	}
	return o
}

// observe records a result's per-plugin verdicts and latencies. It is safe
// for concurrent use (the map is read only).
func (o observers) observe(r *host.Result) {
	for _, t := range r.Timings {
		po := o[t.Plugin]
		if po == nil {
			continue
		}
		po.latency.Observe(t.Duration.Seconds())
		v := abi.VerdictOK
		if t.Plugin == r.Plugin {
			v = r.Verdict
		}
		if v >= 0 && int(v) < len(po.verdicts) {
			po.verdicts[v].Inc()
		}
	}
}

// gaugeLoop keeps the pending and lag gauges current.
func (p *Processor) gaugeLoop(ctx context.Context) {
	if p.rdb == nil {
		return
	}
	t := time.NewTicker(p.cfg.ReclaimInterval)
	defer t.Stop()
	for {
		groups, err := p.rdb.XInfoGroups(ctx, p.cfg.Stream).Result()
		if err == nil {
			for _, g := range groups {
				if g.Name == p.cfg.Group {
					p.metrics.Pending.Set(float64(g.Pending))
					p.metrics.Lag.Set(float64(g.Lag))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchLoop runs checkStall on a ticker of its own: it makes no Redis call,
// so a stuck connection cannot stop it.
func (p *Processor) watchLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.ReclaimInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.checkStall()
		}
	}
}

// checkStall marks the processor unhealthy when no read returned — with
// entries, empty or with an error — for far longer than a read may take:
// the read loop is stuck, and /healthz tells the orchestrator to restart
// the replica (its entries are reclaimed by the others meanwhile).
func (p *Processor) checkStall() {
	last := p.lastRead.Load()
	if last == 0 {
		return
	}
	stalled := time.Since(time.Unix(0, last)) > p.cfg.Block+2*readGrace
	if stalled && !p.stalled.Swap(true) {
		p.log.Error("read_loop_stalled",
			slog.Duration("since_last_read", time.Since(time.Unix(0, last)).Round(time.Second)),
			slog.String("detail", "no read from Redis returned; /healthz now fails so that this replica is restarted"))
	}
	if !stalled && p.stalled.Swap(false) {
		p.log.Info("read_loop_resumed")
	}
}
