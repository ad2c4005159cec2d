package processor

import (
	"context"
	"log/slog"
	"sync"
	"time"
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
	ids         []string
	ok, dropped int64
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
	err := p.retryRedis(ctx, "commit", func() error {
		var err error
		acked, err = p.bus.XAck(ctx, p.cfg.Stream, p.cfg.Group, a.ids...)
		return err
	})
	if err != nil {
		return // shutdown timed out: left pending, said once by Run
	}
	p.acked(a, acked)
}

// acked accounts for acks sent: acked of a.ids were still pending. The
// entries are no longer held.
func (p *Processor) acked(a pendingAcks, acked int64) {
	p.held.acked(a.ids)
	p.outcomes.acked(len(a.ids), acked, a.ok, a.dropped)
	p.log.Debug("audit_events_acknowledged", slog.Int("count", len(a.ids)), slog.Int64("acked", acked), slog.Int("emitted", 0))
}
