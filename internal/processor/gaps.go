package processor

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/auditproc/auditproc/internal/streambus"
)

// DefaultGapGrace is how long a hole in a source's sequence may stay open
// (entries of one source may arrive out of order) before it is an alarm.
const DefaultGapGrace = 30 * time.Second

// gapTracker holds the holes in the sequences of the chained sources this
// process committed entries of, as the commits report them
// (streambus.SourceMark), with when each was first seen.
type gapTracker struct {
	mu    sync.Mutex
	holes map[string]hole // by source
}

type hole struct {
	from, to uint64
	since    time.Time
}

// observe records where sources stand after a commit: a hole that starts
// where it started before keeps its age; a filled one is forgotten.
func (g *gapTracker) observe(marks []streambus.SourceMark) {
	if len(marks) == 0 {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range marks {
		from, to, ok := m.Hole()
		if !ok {
			delete(g.holes, m.Source)
			continue
		}
		h, seen := g.holes[m.Source]
		if !seen || h.from != from {
			h = hole{from: from, since: now}
		}
		h.to = to
		if g.holes == nil {
			g.holes = map[string]hole{}
		}
		g.holes[m.Source] = h
	}
}

// due returns the holes open for at least grace, by source.
func (g *gapTracker) due(grace time.Duration) map[string]hole {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out map[string]hole
	for src, h := range g.holes {
		if time.Since(h.since) >= grace {
			if out == nil {
				out = map[string]hole{}
			}
			out[src] = h
		}
	}
	return out
}

// gapLoop raises the alarm for holes whose grace period ended: each is
// settled in Redis once (streambus.SettleGap: of several replicas that saw
// it, one reports it), logged as audit_sequence_gap and counted in
// auditproc_sequence_gaps_total. The missing entries are then given up: one
// that still arrives is refused as replayed.
func (p *Processor) gapLoop(ctx context.Context) {
	tick := time.NewTicker(min(max(p.cfg.GapGrace/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for src, h := range p.gaps.due(p.cfg.GapGrace) {
			settled, mark, err := p.bus.SettleGap(ctx, p.cfg.Stream, p.cfg.Group, src, h.from, h.to)
			if err != nil {
				p.metrics.RedisErrors.WithLabelValues("settle_gap").Inc()
				continue // tried again at the next tick
			}
			if settled >= h.from {
				p.metrics.SequenceGaps.Inc()
				p.log.Error("audit_sequence_gap",
					slog.String("stream", p.cfg.Stream), slog.String("source", src),
					slog.Uint64("missing_from", h.from), slog.Uint64("missing_to", settled),
					slog.Uint64("missing", settled-h.from+1),
					slog.Duration("grace", p.cfg.GapGrace), slog.Duration("open_for", time.Since(h.since).Round(time.Millisecond)),
					slog.String("detail", "sequence numbers of this source never arrived: entries deleted or trimmed before they were read, or lost by the producer"))
			}
			p.gaps.observe([]streambus.SourceMark{mark})
		}
	}
}
