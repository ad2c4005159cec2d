package processor

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/auditproc/auditproc/internal/streambus"
)

// recoverCrashed charges one attempt to each entry that a process of this
// pipeline was running when it died (its crash journal says so), and
// dead-letters, with the reason crashed_host, those whose attempts reach
// MaxDeliveries: an entry that kills the process every time it runs ends in
// the dead-letter stream, and the entries read with it, which were not
// running, are not charged at all.
func (p *Processor) recoverCrashed(ctx context.Context) error {
	if p.cfg.StateDir == "" {
		return nil
	}
	ids, done, err := crashedJournals(p.cfg.StateDir, p.cfg.Stream, p.cfg.Group)
	if err != nil {
		p.log.Error("crash_journal_unavailable", slog.String("error", err.Error()))
		return nil
	}
	defer done()
	if len(ids) == 0 {
		return nil
	}
	var charged []streambus.Charged
	err = p.retryRedis(ctx, "charge", func() error {
		var err error
		charged, err = p.bus.Charge(ctx, p.cfg.Stream, p.cfg.Group, ids...)
		return err
	})
	if err != nil {
		return err
	}
	p.log.Warn("crashed_entries_charged", slog.Any("entry_ids", ids),
		slog.String("detail", "auditproc stopped while running these entries; each is charged one attempt"))
	var letters []streambus.Letter
	for i, id := range ids {
		c := charged[i]
		if c.Attempts < int64(p.cfg.MaxDeliveries) {
			continue // not pending any more (0), or attempts left
		}
		var raw []streambus.RawEntry
		err := p.retryRedis(ctx, "xrange", func() error {
			var err error
			raw, err = p.bus.XRange(ctx, p.cfg.Stream, id, id, 1)
			return err
		})
		if err != nil {
			return err
		}
		if len(raw) == 0 {
			continue // deleted meanwhile: the reclaimer reports it
		}
		letters = append(letters, raw[0].Letter(streambus.Reason{
			Kind:   streambus.ReasonCrashedHost,
			Detail: fmt.Sprintf("auditproc stopped while running it %d times (limit %d)", c.Attempts, p.cfg.MaxDeliveries),
		}, c.Deliveries))
	}
	p.deadLetter(ctx, letters)
	return nil
}
