package processor

import (
	"context"

	"github.com/auditproc/auditproc/internal/streambus"
)

// deadLetter moves letters to the dead-letter stream (atomically with their
// acks), retrying through outages.
func (p *Processor) deadLetter(ctx context.Context, letters []streambus.Letter) {
	if len(letters) == 0 {
		return
	}
	var ids []string
	err := p.retryRedis(ctx, "dead_letter", func() error {
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
		p.outcomes.deadLettered(l.Reason.Kind)
	}
}
