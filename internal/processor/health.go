package processor

import (
	"context"
	"log/slog"
	"time"
)

// setReady records whether Redis answers and the loop runs, for /readyz
// and the auditproc_ready gauge alike.
func (p *Processor) setReady(ready bool) {
	p.readyMu.Lock()
	defer p.readyMu.Unlock()
	p.ready.Store(ready)
	p.publishReady()
}

// publishReady sets the auditproc_ready gauge from Ready (of every shard
// of the replica). readyMu is held.
func (p *Processor) publishReady() {
	if p.shards != nil {
		p.shards.publishReady()
		return
	}
	if p.Ready() {
		p.metrics.Ready.Set(1)
	} else {
		p.metrics.Ready.Set(0)
	}
}

// gaugeLoop keeps the pending and lag gauges current.
func (p *Processor) gaugeLoop(ctx context.Context) {
	gauge := func() bool {
		if info, err := p.bus.XInfoGroup(ctx, p.cfg.Stream, p.cfg.Group); err == nil {
			if p.shards != nil {
				p.shards.publishGauges(p.shard, info)
			} else {
				p.metrics.Pending.Set(float64(info.Pending))
				p.metrics.Lag.Set(float64(info.Lag))
			}
		}
		return true
	}
	gauge()
	every(ctx, p.cfg.ReclaimInterval, gauge)
}

// watchLoop runs checkStall on a ticker of its own: it makes no Redis call,
// so a stuck connection cannot stop it.
func (p *Processor) watchLoop(ctx context.Context) {
	every(ctx, p.cfg.ReclaimInterval, func() bool { p.checkStall(); return true })
}

// every calls f every d until ctx ends or f returns false.
func every(ctx context.Context, d time.Duration, f func() bool) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !f() {
				return
			}
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
