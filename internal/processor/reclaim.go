package processor

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/streambus"
)

// reclaimLoop claims entries idle longer than MinIdle, from any consumer of
// the group (this one's own retries included), and runs them again.
func (p *Processor) reclaimLoop(ctx context.Context, feed feeder) {
	every(ctx, p.cfg.ReclaimInterval, func() bool { return p.reclaim(ctx, feed) })
}

// reclaim sweeps the group's pending list once. It returns false once ctx
// ended.
func (p *Processor) reclaim(ctx context.Context, feed feeder) bool {
	cursor := "0-0"
	for {
		var batch streambus.Batch
		err := p.retryRedis(ctx, "xautoclaim", func() error {
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
			return false
		}
		p.outcomes.reclaimed(len(batch.Entries) + len(batch.Tampered))
		if !feed.send(p.triage(ctx, batch, true)) {
			return false
		}
		cursor = batch.Cursor
		if cursor == "" || cursor == "0-0" {
			return true
		}
	}
}
