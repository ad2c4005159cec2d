package processor

import (
	"context"
	"time"

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
		// From the claim until triage took its entries, acks are noted,
		// so that an entry finished meanwhile is not run again.
		p.held.claim(true)
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
			p.held.claim(false)
			return false
		}
		p.outcomes.reclaimed(len(batch.Entries) + len(batch.Tampered))
		run := p.triage(ctx, batch, true)
		p.held.claim(false)
		if !feed.send(run) {
			return false
		}
		cursor = batch.Cursor
		if cursor == "" || cursor == "0-0" {
			return true
		}
	}
}

// keepHeldLoop keeps the entries this process holds (queued, running, or
// waiting for their ack) from looking idle to any consumer's reclaimer,
// this one's included: every quarter of MinIdle it resets their idle time
// in Redis without counting a delivery (streambus.Touch).
func (p *Processor) keepHeldLoop(ctx context.Context) {
	every(ctx, max(p.cfg.MinIdle/4, minKeepAlive), func() bool {
		if ids := p.held.list(); len(ids) > 0 {
			_ = p.retryRedis(ctx, "touch", func() error {
				_, err := p.bus.Touch(ctx, p.cfg.Stream, p.cfg.Group, p.cfg.Consumer, ids...)
				return err
			})
		}
		return true
	})
}

// minKeepAlive bounds how often held entries are touched.
const minKeepAlive = 10 * time.Millisecond
