package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tidwall/gjson"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/internal/integrity"
	extsink "github.com/auditproc/auditproc/internal/sink"
)

// deliver writes the emits of the batch's ok results to the external sinks
// (postgres, syslog, http) and returns once each sink confirmed them; only
// then does planCommit ack the entries. Meanwhile the entries stay held by
// this replica (and pending in Redis): a destination that is down stops the
// commit loop, which holds back the workers and the reader (back-pressure).
//
// An event the destination refuses for good (an HTTP 400, a row PostgreSQL
// cannot store) turns its entry's verdict into a reject: the entry is
// dead-lettered with the destination's answer instead of being retried for
// ever. When ctx ends before a sink confirmed, the entries it did not
// confirm become retries: left pending, delivered again later, where the
// event id lets the destination recognise what it already has.
func (p *Processor) deliver(ctx context.Context, batch []work) {
	type target struct {
		items  []extsink.Item
		owners []int // index in batch of each item's entry
		emits  []int // index of the item among its entry's emits
	}
	var targets map[string]*target
	for i := range batch {
		w := &batch[i]
		if w.result.Verdict != abi.VerdictOK {
			continue
		}
		for j, e := range w.result.Emits {
			s := p.sinks[e.Sink]
			if s == nil || s.dest == nil {
				continue
			}
			if targets == nil {
				targets = map[string]*target{}
			}
			t := targets[e.Sink]
			if t == nil {
				t = &target{}
				targets[e.Sink] = t
			}
			t.items = append(t.items, extsink.Item{
				// checkEmits stamped every emit of an ok result.
				EventID: gjson.GetBytes(e.Event, integrity.EventIDMember).Str,
				EntryID: w.entry.ID, Stream: w.entry.Stream, KeyID: w.entry.KeyID, Event: e.Event,
			})
			t.owners = append(t.owners, i)
			t.emits = append(t.emits, j)
		}
	}
	for name, t := range targets {
		s := p.sinks[name]
		pending := make([]int, len(t.items))
		for k := range pending {
			pending[k] = k
		}
		err := p.retrySink(ctx, s, func() error {
			sub := make([]extsink.Item, len(pending))
			for k, idx := range pending {
				sub[k] = t.items[idx]
			}
			start := time.Now()
			err := s.dest.Write(ctx, sub)
			p.metrics.SinkLatency.WithLabelValues(name).Observe(time.Since(start).Seconds())
			var again []int
			confirmed := 0
			for k, e := range extsink.ItemErrors(err, len(sub)) {
				idx := pending[k]
				switch {
				case e == nil:
					confirmed++
				case extsink.IsPermanent(e):
					p.refuse(&batch[t.owners[idx]], t.emits[idx], name, e)
				default:
					again = append(again, idx)
				}
			}
			p.metrics.SinkWrites.WithLabelValues(name).Add(float64(confirmed))
			pending = again
			if len(pending) > 0 {
				return err
			}
			if err != nil {
				// Refusals only: counted, not retried.
				p.metrics.SinkErrors.WithLabelValues(name).Inc()
			}
			return nil
		})
		if err != nil {
			for _, idx := range pending {
				r := &batch[t.owners[idx]].result
				if r.Verdict == abi.VerdictOK {
					r.Verdict = abi.VerdictRetry
					r.Message = fmt.Sprintf("sink %q did not confirm before shutdown", name)
				}
			}
		}
	}
	for name, t := range targets {
		n := 0
		for _, owner := range t.owners {
			if batch[owner].result.Verdict == abi.VerdictOK {
				n++
			}
		}
		p.outcomes.emitted(name, n)
	}
}

// refuse dead-letters w's entry: the destination of sink refused the
// entry's emit number emit for good.
func (p *Processor) refuse(w *work, emit int, sink string, err error) {
	r := &w.result
	if r.Verdict != abi.VerdictOK {
		return // already refused by another sink
	}
	var pe *extsink.PermanentError
	reason := err.Error()
	if errors.As(err, &pe) {
		reason = pe.Error()
	}
	p.log.Error("sink_refused_event", slog.String("sink", sink), slog.String("entry_id", w.entry.ID),
		slog.String("event_id", w.entry.EventID), slog.String("error", reason))
	r.Verdict = abi.VerdictReject
	r.Plugin = r.Emits[emit].Plugin
	r.Message = reason
	r.Emits = nil
}
