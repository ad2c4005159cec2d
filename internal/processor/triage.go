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
// forensics without looping forever); signature mismatches of a key id
// under suspicion of a keyring mismatch (keyring.go) stay pending whatever
// their deliveries. redelivered marks a batch of entries
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
	// Chained entries are looked up before any plugin runs: a (source,
	// seq) already delivered under another entry id is a replay.
	var letters []streambus.Letter
	var gone []streambus.Entry
	batch.Entries, batch.Checkpoints, letters, gone = p.refuseReplays(ctx, batch.Entries, batch.Checkpoints)
	defer p.held.remove(gone) // once dead-lettered
	if len(batch.Checkpoints) > 0 {
		// Checkpoints of chained sources prove the trail whole to a reader
		// of the stream; they carry no event for the plugins. They count in
		// their source's sequence, so they are committed with their marks.
		items := make([]streambus.Item, len(batch.Checkpoints))
		for i, c := range batch.Checkpoints {
			items[i] = streambus.Item{ID: c.ID, Mark: c.Mark()}
		}
		var res streambus.CommitResult
		if err := p.retryRedis(ctx, "commit", func() error {
			var err error
			res, err = p.bus.Commit(ctx, p.cfg.Stream, p.cfg.Group, items...)
			return err
		}); err == nil {
			p.gaps.observe(res.Marks)
			for _, i := range res.Replayed {
				letters = append(letters, p.replayed(ctx, batch.Checkpoints[i], "its sequence number was settled meanwhile"))
			}
		}
	}
	if !redelivered {
		p.watchKeys(ctx, batch)
	}
	for _, t := range batch.Tampered {
		if p.keyWatch.holds(t) {
			continue // a keyring mismatch is suspected: left pending
		}
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

// refuseReplays looks up the marks of a batch's chained entries and
// checkpoints (one round trip, none for a batch without them) and returns
// those to go on with, the dead letters of the replayed ones, and the
// entries not to run (replayed, or found acknowledged meanwhile: a stale
// claim), for the caller to let go once the letters are sent. On a Redis
// failure every entry goes on: the commit refuses a replay too (with its
// plugins run).
func (p *Processor) refuseReplays(ctx context.Context, entries, checkpoints []streambus.Entry) (run, cps []streambus.Entry, letters []streambus.Letter, gone []streambus.Entry) {
	var marks []streambus.Mark
	for _, list := range [][]streambus.Entry{entries, checkpoints} {
		for i := range list {
			if list[i].Source != "" {
				marks = append(marks, list[i].Mark())
			}
		}
	}
	if len(marks) == 0 {
		return entries, checkpoints, nil, nil
	}
	var verdicts []streambus.SeenVerdict
	if err := p.retryRedis(ctx, "seen", func() error {
		var err error
		verdicts, err = p.bus.Seen(ctx, p.cfg.Stream, p.cfg.Group, marks)
		return err
	}); err != nil {
		return entries, checkpoints, nil, nil
	}
	n := 0
	keep := func(list []streambus.Entry) []streambus.Entry {
		out := list[:0]
		for _, e := range list {
			if e.Source == "" {
				out = append(out, e)
				continue
			}
			v := verdicts[n]
			n++
			switch v {
			case streambus.SeenReplayed:
				letters = append(letters, p.replayed(ctx, e, "already delivered under another entry id"))
				gone = append(gone, e)
			case streambus.SeenFinished:
				gone = append(gone, e)
			default:
				out = append(out, e)
			}
		}
		return out
	}
	run = keep(entries)
	cps = keep(checkpoints)
	return run, cps, letters, gone
}

// replayed refuses a replayed entry: the security log line and the
// tampered metric of a refused entry, and its dead letter (reason
// replayed), which does not take its mark.
func (p *Processor) replayed(ctx context.Context, e streambus.Entry, why string) streambus.Letter {
	p.log.LogAttrs(ctx, slog.LevelWarn, "security_audit_tampered_message",
		slog.String("entry_id", e.ID), slog.String("stream", e.Stream),
		slog.String("reason", string(streambus.ReasonReplayed)),
		slog.String("error", fmt.Sprintf("replayed: seq %d of source %s %s", e.Seq, e.Source, why)),
		slog.String("source", e.Source), slog.Uint64("seq", e.Seq),
		slog.String("group", p.cfg.Group), slog.String("consumer", p.cfg.Consumer),
		slog.Int64("deliveries", e.Deliveries))
	p.metrics.Tampered.WithLabelValues(string(streambus.ReasonReplayed)).Inc()
	p.outcomes.tampered(e.ID)
	return e.Letter(streambus.Reason{Kind: streambus.ReasonReplayed,
		Detail: fmt.Sprintf("seq %d of source %s %s", e.Seq, e.Source, why)})
}
