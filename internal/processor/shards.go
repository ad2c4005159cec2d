package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/streambus"
)

// Shards runs a replica's share of a sharded trail: one Processor per
// shard, each with its own stream, group, dead-letter stream, sink streams
// and Bus (so its own blocking read, reclaim sweep, chained writes and
// commits, which on Redis Cluster go to the shard's slot), sharing the
// pipeline, the line and external sinks, the totals and the metrics. A
// trail of one shard is one Processor.
type Shards struct {
	procs []*Processor
	log   *slog.Logger
	sinks map[string]*sink // shard 0's; every shard's line and external sinks are these

	mu           sync.Mutex // orders the shared gauges' updates
	pending, lag []int64
}

// NewShards checks each shard's configuration (cfgs[k] is shard k's, buses[k]
// its Bus) and opens the sinks once for all shards. The configurations may
// differ only in their stream names: sinks are opened from cfgs[0].
func NewShards(cfgs []Config, buses []*streambus.Bus, logger *slog.Logger, pipeline *host.Pipeline, metrics *Metrics) (*Shards, error) {
	bs := make([]bus, len(buses))
	for k, b := range buses {
		bs[k] = b
	}
	return newShards(cfgs, bs, logger, pipeline, metrics)
}

func newShards(cfgs []Config, buses []bus, logger *slog.Logger, pipeline *host.Pipeline, metrics *Metrics) (*Shards, error) {
	if len(cfgs) == 0 || len(cfgs) != len(buses) {
		return nil, fmt.Errorf("processor: %d shard configurations for %d buses", len(cfgs), len(buses))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	for k := range cfgs {
		cfgs[k].setDefaults()
		if err := cfgs[k].Validate(); err != nil {
			return nil, fmt.Errorf("shard %d: %w", k, err)
		}
	}
	sinks, err := openSinks(cfgs[0].Sinks)
	if err != nil {
		return nil, err
	}
	s := &Shards{log: logger, sinks: sinks, pending: make([]int64, len(cfgs)), lag: make([]int64, len(cfgs))}
	gens := &generations{}
	gens.cur.Store(newGeneration(metrics, pipeline, logger))
	stats := &Stats{}
	for k, cfg := range cfgs {
		log := logger
		if len(cfgs) > 1 {
			log = logger.With(slog.Int("shard", k))
		}
		p := newProcessor(cfg, log, buses[k], metrics, gens, stats, shardSinks(sinks, cfg.Sinks))
		p.shards, p.shard = s, k
		s.procs = append(s.procs, p)
	}
	return s, nil
}

// shardSinks is the open sinks with each stream sink's stream the shard's.
func shardSinks(open map[string]*sink, cfg map[string]Sink) map[string]*sink {
	out := make(map[string]*sink, len(open))
	for name, o := range open {
		c := *o
		c.stream = cfg[name].Stream
		out[name] = &c
	}
	return out
}

// Run runs every shard's loop until ctx is cancelled (or, with StopWhenIdle,
// until every shard is drained) and closes the sinks once all have
// returned. A shard whose loop fails stops the others: the replica exits
// and its entries stay pending for a restart or another replica.
func (s *Shards) Run(ctx context.Context) error {
	defer closeSinks(s.sinks)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(s.procs))
	var wg sync.WaitGroup
	for k, p := range s.procs {
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				errs[k] = fmt.Errorf("shard %d (%s): %w", k, p.cfg.Stream, err)
				cancel()
			}
		})
	}
	wg.Wait()
	logStopped(s.log, s.Stats())
	return errors.Join(errs...)
}

// Ready reports whether every shard is ready (Processor.Ready).
func (s *Shards) Ready() bool {
	for _, p := range s.procs {
		if !p.Ready() {
			return false
		}
	}
	return true
}

// NotReadyReason says why Ready is false, naming the shard's stream when
// there are several; "" when ready.
func (s *Shards) NotReadyReason() string {
	for _, p := range s.procs {
		if r := p.NotReadyReason(); r != "" {
			if len(s.procs) > 1 {
				return "stream " + p.cfg.Stream + ": " + r
			}
			return r
		}
	}
	return ""
}

// Healthy reports whether every shard's read loop is alive.
func (s *Shards) Healthy() bool {
	for _, p := range s.procs {
		if !p.Healthy() {
			return false
		}
	}
	return true
}

// Stats returns the totals of all shards.
func (s *Shards) Stats() *Stats { return s.procs[0].stats }

// Reload swaps in a new pipeline for every shard at once (Processor.Reload).
func (s *Shards) Reload(pipeline *host.Pipeline) <-chan struct{} { return s.procs[0].Reload(pipeline) }

// Pipeline returns the pipeline the shards run now.
func (s *Shards) Pipeline() *host.Pipeline { return s.procs[0].Pipeline() }

// publishReady sets the auditproc_ready gauge from Ready.
func (s *Shards) publishReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Ready() {
		s.procs[0].metrics.Ready.Set(1)
	} else {
		s.procs[0].metrics.Ready.Set(0)
	}
}

// publishLastRead sets the last-read gauge to the oldest of the shards'
// last successful reads: one stuck shard shows.
func (s *Shards) publishLastRead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	oldest := int64(0)
	for _, p := range s.procs {
		t := p.lastOK.Load()
		if t == 0 {
			return // a shard that never read yet: nothing to show
		}
		if oldest == 0 || t < oldest {
			oldest = t
		}
	}
	s.procs[0].metrics.LastRead.Set(float64(oldest) / 1e9)
}

// publishGauges records shard k's group state and sets the pending and lag
// gauges to the sums over the shards (the lag -1, unknown, when a shard's
// is).
func (s *Shards) publishGauges(k int, info streambus.GroupInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[k], s.lag[k] = info.Pending, info.Lag
	var pending, lag int64
	for i := range s.pending {
		pending += s.pending[i]
		if lag >= 0 && s.lag[i] >= 0 {
			lag += s.lag[i]
		} else {
			lag = -1
		}
	}
	s.procs[0].metrics.Pending.Set(float64(pending))
	s.procs[0].metrics.Lag.Set(float64(lag))
}
