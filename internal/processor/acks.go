package processor

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/auditproc/auditproc/internal/streambus"
)

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
// timeout) stays pending and is delivered again. Queued entries stay held
// until their ack is sent.
type ackQueue struct {
	mu      sync.Mutex
	pending pendingAcks
}

// pendingAcks are entry ids to acknowledge, with how many of them ended ok
// and dropped, counted once acknowledged.
type pendingAcks struct {
	ids []string
	// marks, when not nil, are the ids' marks (chained entries: recorded
	// with the ack; the zero Mark for the others).
	marks       []streambus.Mark
	ok, dropped int64
}

// markList returns the marks of a, nil for a nil a.
func (a *pendingAcks) markList() []streambus.Mark {
	if a == nil {
		return nil
	}
	return a.marks
}

// chained says whether any of a's acks carries a mark.
func (a *pendingAcks) chained() bool {
	for _, m := range a.markList() {
		if m.Source != "" {
			return true
		}
	}
	return false
}

// padMarks is marks grown with zero Marks to n.
func padMarks(marks []streambus.Mark, n int) []streambus.Mark {
	for len(marks) < n {
		marks = append(marks, streambus.Mark{})
	}
	return marks
}

// list returns the ids of a, nil for a nil a.
func (a *pendingAcks) list() []string {
	if a == nil {
		return nil
	}
	return a.ids
}

func (q *ackQueue) put(a pendingAcks) {
	q.mu.Lock()
	if a.marks != nil || q.pending.marks != nil {
		q.pending.marks = append(padMarks(q.pending.marks, len(q.pending.ids)), padMarks(a.marks, len(a.ids))...)
	}
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
	var replayed []string
	err := p.retryRedis(ctx, "commit", func() error {
		if !a.chained() {
			var err error
			acked, err = p.bus.XAck(ctx, p.cfg.Stream, p.cfg.Group, a.ids...)
			return err
		}
		items := make([]streambus.Item, len(a.ids))
		for i, id := range a.ids {
			items[i] = streambus.Item{ID: id, Mark: a.marks[i]}
		}
		res, err := p.bus.Commit(ctx, p.cfg.Stream, p.cfg.Group, items...)
		if err == nil {
			acked = res.Acked
			p.gaps.observe(res.Marks)
			for _, i := range res.Replayed {
				replayed = append(replayed, a.ids[i])
			}
		}
		return err
	})
	if err != nil {
		return // shutdown timed out: left pending, said once by Run
	}
	p.acked(a, acked)
	p.replayedAcks(ctx, replayed)
}

// replayedAcks dead-letters acks the commit refused as replays: another
// entry id took their (source, seq) after the lookup (which then failed, or
// the state was changed). The plugins ran them; their emits were not
// appended. An entry that cannot be read back stays pending, and its next
// delivery's lookup refuses it.
func (p *Processor) replayedAcks(ctx context.Context, ids []string) {
	var letters []streambus.Letter
	for _, id := range ids {
		raw, err := p.bus.XRange(ctx, p.cfg.Stream, id, id, 1)
		if err != nil || len(raw) == 0 || raw[0].ID != id {
			continue
		}
		p.log.LogAttrs(ctx, slog.LevelWarn, "security_audit_tampered_message",
			slog.String("entry_id", id), slog.String("stream", p.cfg.Stream),
			slog.String("reason", string(streambus.ReasonReplayed)),
			slog.String("error", "replayed: its sequence number was taken by another entry id before the ack"),
			slog.String("group", p.cfg.Group), slog.String("consumer", p.cfg.Consumer))
		p.metrics.Tampered.WithLabelValues(string(streambus.ReasonReplayed)).Inc()
		p.outcomes.tampered(id)
		letters = append(letters, raw[0].Letter(streambus.Reason{Kind: streambus.ReasonReplayed,
			Detail: "its sequence number was taken by another entry id before the ack"}, 0))
	}
	p.deadLetter(ctx, letters)
}

// acked accounts for acks sent: acked of a.ids were still pending. The
// entries are no longer held.
func (p *Processor) acked(a pendingAcks, acked int64) {
	p.held.acked(a.ids)
	p.outcomes.acked(len(a.ids), acked, a.ok, a.dropped)
	p.log.Debug("audit_events_acknowledged", slog.Int("count", len(a.ids)), slog.Int64("acked", acked), slog.Int("emitted", 0))
}
