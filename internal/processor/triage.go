package processor

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/auditproc/auditproc/internal/streambus"
)

// triage accounts for a batch and returns the entries to run, which it
// holds: entries past their attempt budget and tampered entries past their
// delivery budget are dead-lettered; entries deleted while pending raise the
// integrity alarm; tampered entries under the budget stay pending (the
// reclaimer brings them back until the budget is spent, so they are kept for
// forensics without looping forever). redelivered marks a batch of entries
// delivered before (re-read or claimed).
func (p *Processor) triage(ctx context.Context, batch streambus.Batch, redelivered bool) []streambus.Entry {
	// The reclaimer may claim an entry this process holds already (read
	// by the reader a moment before, or claimed while its keep-alive could
	// not reach Redis): that one is not run twice.
	batch.Entries = p.held.take(batch.Entries)
	p.outcomes.read(batch)
	if len(batch.Deleted) > 0 {
		p.log.Error("pending_entries_deleted",
			slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group),
			slog.Any("entry_ids", batch.Deleted),
			slog.String("detail", "entries were deleted or trimmed from the stream before they were processed"))
		// A history read keeps deleted ids pending until acked; nothing
		// remains to process, so clear them.
		_ = p.retryRedis(ctx, "xack", func() error {
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
		_ = p.retryRedis(ctx, "xack", func() error {
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
		var spent []streambus.Entry
		run = run[:0:0]
		for _, e := range batch.Entries {
			if e.Attempts < int64(p.cfg.MaxDeliveries) {
				run = append(run, e)
				continue
			}
			letters = append(letters, e.Letter(p.exhausted(e)))
			spent = append(spent, e)
		}
		defer p.held.remove(spent)
	}
	p.deadLetter(ctx, letters)
	return run
}

// exhausted is the dead-letter reason of an entry past its attempt budget,
// with its last failure when this process saw it.
func (p *Processor) exhausted(e streambus.Entry) streambus.Reason {
	detail := fmt.Sprintf("failed %d attempts (limit %d), delivered %d times", e.Attempts, p.cfg.MaxDeliveries, e.Deliveries)
	if f, ok := p.failures.take(e.ID); ok {
		detail += fmt.Sprintf("; last failure: plugin %q: %s", f.plugin, f.message)
	}
	return streambus.Reason{Kind: streambus.ReasonMaxDeliveries, Detail: detail}
}
