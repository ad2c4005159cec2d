package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/streambus"
)

// Defaults of Config; the configuration file documents the same values.
const (
	DefaultBatchSize       = 256
	DefaultBlock           = 2 * time.Second
	DefaultWorkers         = 2
	DefaultReclaimInterval = 5 * time.Second
	DefaultMinIdle         = 60 * time.Second
	DefaultMaxDeliveries   = 5
	DefaultShutdownTimeout = 30 * time.Second

	// readGrace is added to a read's block time for its own deadline.
	readGrace = 15 * time.Second
	// maxRemembered bounds the last-failure memory used for dead letters.
	maxRemembered = 100_000
)

// Config is what the loop needs to know.
type Config struct {
	Stream     string
	Group      string
	Consumer   string
	DeadLetter string
	// BatchSize is the COUNT of each read and claim. Default DefaultBatchSize.
	BatchSize int
	// Block is how long one read waits. Default DefaultBlock.
	Block time.Duration
	// Workers run the pipeline concurrently. Default DefaultWorkers.
	Workers int
	// ReclaimInterval between sweeps of idle pending entries. Default
	// DefaultReclaimInterval.
	ReclaimInterval time.Duration
	// MinIdle before an entry may be claimed. Default DefaultMinIdle.
	MinIdle time.Duration
	// MaxDeliveries is how many real attempts an entry gets before it is
	// dead-lettered: runs that failed, and runs during which the process
	// died. Reads and claims do not count. Default DefaultMaxDeliveries.
	MaxDeliveries int
	// ShutdownTimeout bounds the drain of in-flight entries once ctx is
	// cancelled. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// StateDir holds this process's crash journal (journal.go), so that a
	// restart charges an attempt only to the entries that were running
	// when the process died. Empty: no journal (a crash then charges
	// nothing). It should survive a restart of the process.
	StateDir string
	// Sinks by name.
	Sinks map[string]Sink
	// GapGrace is how long a skipped sequence number of a chained source
	// may stay missing before audit_sequence_gap. Default DefaultGapGrace.
	GapGrace time.Duration
	// StopWhenIdle makes Run return once the stream is drained: nothing new
	// to read, nothing pending for the group (used by the demo and tests).
	StopWhenIdle bool
}

func (c *Config) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.ReclaimInterval == 0 {
		c.ReclaimInterval = DefaultReclaimInterval
	}
	if c.MinIdle == 0 {
		c.MinIdle = DefaultMinIdle
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = DefaultMaxDeliveries
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.GapGrace == 0 {
		c.GapGrace = DefaultGapGrace
	}
}

// Validate reports a configuration the loop cannot run with.
func (c *Config) Validate() error {
	var errs []error
	if c.Stream == "" || c.Group == "" || c.Consumer == "" || c.DeadLetter == "" {
		errs = append(errs, errors.New("processor: stream, group, consumer and dead-letter stream are required"))
	}
	if c.BatchSize < 1 || c.Workers < 1 || c.MaxDeliveries < 1 || c.Block <= 0 || c.MinIdle <= 0 || c.ReclaimInterval <= 0 || c.GapGrace <= 0 {
		errs = append(errs, errors.New("processor: batch size, workers, max deliveries, block, min idle, reclaim interval and gap grace must be positive"))
	}
	for name, s := range c.Sinks {
		if err := s.validate(); err != nil {
			errs = append(errs, fmt.Errorf("processor: sink %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Processor is the run loop. Create it with New and call Run once.
type Processor struct {
	cfg      Config
	log      *slog.Logger
	bus      bus
	gens     *generations // the pipeline now, swapped by Reload (shared by a replica's shards)
	metrics  *Metrics
	sinks    map[string]*sink // by name
	outcomes outcomes
	// shards is the replica's set of shards this processor is one of (nil
	// when run alone): it owns the sinks and publishes the gauges for all.
	shards *Shards
	shard  int // this processor's index in shards

	readyMu  sync.Mutex // orders ready's changes with the gauge's
	ready    atomic.Bool
	lastRead atomic.Int64 // unix nanoseconds when a read, or a Redis operation retried, last returned
	lastOK   atomic.Int64 // unix nanoseconds when a read last succeeded
	stalled  atomic.Bool
	failures failureMemory
	journal  *journal
	// held are the entries this process holds: read and not yet finished
	// in Redis (queued for a worker, running, or waiting for their ack).
	// The reclaimer leaves them alone.
	held heldSet
	// uncommitted counts the entries handed to the workers whose verdict
	// is not committed yet. An entry leaves it when its commit was planned
	// (its ack may still wait in acks, where it stays held).
	uncommitted atomic.Int64
	acks        ackQueue   // finished entries to acknowledge with the next read
	chunks      sync.Pool  // of *[]work: result chunks, reused once committed
	stats       *Stats     // shared by a replica's shards
	gaps        gapTracker // holes in chained sources' sequences
	keyWatch    keyWatch   // key ids whose entries mostly fail their signature
}

// New checks cfg and opens the line sinks. b is the processor's only way to
// Redis (a *streambus.Bus).
func New(cfg Config, logger *slog.Logger, b bus, pipeline *host.Pipeline, metrics *Metrics) (*Processor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	sinks, err := openSinks(cfg.Sinks)
	if err != nil {
		return nil, err
	}
	gens := &generations{}
	gens.cur.Store(newGeneration(metrics, pipeline, logger))
	return newProcessor(cfg, logger, b, metrics, gens, &Stats{}, sinks), nil
}

// newProcessor is New with its shared parts given: the pipeline's
// generations, the totals and the open sinks.
func newProcessor(cfg Config, logger *slog.Logger, b bus, metrics *Metrics, gens *generations, stats *Stats, sinks map[string]*sink) *Processor {
	p := &Processor{cfg: cfg, log: logger, bus: b, metrics: metrics, gens: gens, stats: stats, sinks: sinks}
	p.outcomes = outcomes{stats: stats, m: metrics, stream: cfg.Stream}
	p.failures.m = map[string]failure{}
	return p
}

// Ready reports whether Redis answers, the loop runs and no keyring
// mismatch is suspected (for /readyz and the auditproc_ready gauge).
func (p *Processor) Ready() bool { return p.ready.Load() && !p.keyWatch.suspecting() }

// NotReadyReason says why Ready is false, for /readyz; "" when ready.
func (p *Processor) NotReadyReason() string {
	if kids := p.keyWatch.suspects(); len(kids) > 0 {
		return "keyring mismatch suspected for key id " + strings.Join(kids, ", ") +
			": most entries naming it fail their signature (see keyring_mismatch_suspected in the log); they stay pending until the rate drops"
	}
	if !p.ready.Load() {
		return "Redis unreachable or loop stopped"
	}
	return ""
}

// Healthy reports whether the read loop is alive (for /healthz): false
// once no read has returned for far longer than a read may take.
func (p *Processor) Healthy() bool { return !p.stalled.Load() }

// Stats returns the loop's totals.
func (p *Processor) Stats() *Stats { return p.stats }

// Run runs the loop until ctx is cancelled (or, with StopWhenIdle, until the
// stream is drained), and returns once every goroutine it started has
// returned. The caller then closes the plugins and Redis.
func (p *Processor) Run(ctx context.Context) error {
	if p.shards == nil {
		defer closeSinks(p.sinks) // a replica's shards close theirs together
	}
	if err := p.ensureGroup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before Redis ever answered: nothing was read
		}
		return err
	}
	if err := p.recoverCrashed(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if p.cfg.StateDir != "" {
		j, err := openJournal(p.cfg.StateDir, p.cfg.Stream, p.cfg.Group, p.cfg.Consumer, p.cfg.Workers)
		if err != nil {
			// Processing goes on; a crash then charges nothing.
			p.log.Error("crash_journal_unavailable", slog.String("error", err.Error()),
				slog.String("detail", "after a crash, entries that were running are not charged an attempt"))
		} else {
			p.journal = j
			// Removed after the workers are gone (deferred before them):
			// a clean stop leaves nothing to charge.
			defer j.close()
		}
	}
	p.setReady(true)
	defer p.setReady(false)

	// Work outlives ctx by up to ShutdownTimeout, so that what was read is
	// finished and acked.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var shutdownTimer *time.Timer
	var timerMu sync.Mutex
	stopTimer := context.AfterFunc(ctx, func() {
		p.log.Info("shutdown_started", slog.Duration("timeout", p.cfg.ShutdownTimeout))
		timerMu.Lock()
		shutdownTimer = time.AfterFunc(p.cfg.ShutdownTimeout, cancelWork)
		timerMu.Unlock()
	})
	defer func() {
		stopTimer()
		timerMu.Lock()
		if shutdownTimer != nil {
			shutdownTimer.Stop()
		}
		timerMu.Unlock()
	}()

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()

	workers, err := p.startWorkers(workCtx)
	if err != nil {
		return err
	}

	// Entries travel in chunks (see feeder.send), results likewise: one
	// channel operation per chunk, not per entry. The reader runs ahead of
	// the workers by about one batch.
	jobs := make(chan []streambus.Entry, max(2*p.cfg.Workers, p.cfg.BatchSize/maxChunk))
	results := make(chan *[]work, 2*p.cfg.Workers)
	feed := feeder{jobs: jobs, uncommitted: &p.uncommitted, held: &p.held, sendCtx: workCtx, workers: p.cfg.Workers}

	var producers, pool, committer, watchers sync.WaitGroup
	producers.Go(func() { p.readLoop(readCtx, feed, stopReading) })
	producers.Go(func() { p.reclaimLoop(readCtx, feed) })
	for slot, w := range workers {
		pool.Go(func() { p.runWorker(workCtx, slot, w, jobs, results) })
	}
	committer.Go(func() { p.commitLoop(workCtx, results) })
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	watchers.Go(func() { p.gaugeLoop(watchCtx) })
	watchers.Go(func() { p.watchLoop(watchCtx) })
	watchers.Go(func() { p.keepHeldLoop(watchCtx) })
	watchers.Go(func() { p.gapLoop(watchCtx) })

	// Shutdown, in order; each step waits for the one before:
	//  1. ctx is cancelled (or the stream drained): reading and claiming
	//     stop, and the shutdown timer starts;
	producers.Wait()
	//  2. no more entries for the workers: they finish what they were
	//     handed (cut short when ShutdownTimeout ends) and close their
	//     plugin instances;
	close(jobs)
	pool.Wait()
	//  3. no more results: the committer commits the last verdicts and
	//     sends the queued acks;
	close(results)
	committer.Wait()
	//  4. the gauges, the stall watch and the keep-alive of held entries,
	//     which also use Redis, stop;
	stopWatching()
	watchers.Wait()
	//  5. the sinks close (deferred above) and Run returns: no goroutine of
	//     Run's uses Redis or the plugins any more.
	if err := workCtx.Err(); err != nil && ctx.Err() != nil {
		p.log.Warn("shutdown_timed_out", slog.String("detail", "entries still in flight stay pending and are redelivered"))
	}
	if p.shards == nil {
		logStopped(p.log, p.stats) // a replica's shards log their totals once
	}
	return nil
}

// logStopped logs processor_stopped with the totals of st.
func logStopped(log *slog.Logger, st *Stats) {
	log.Info("processor_stopped",
		slog.Int64("processed", st.Processed.Load()), slog.Int64("dropped", st.Dropped.Load()),
		slog.Int64("dead_lettered", st.Rejected.Load()+st.Exhausted.Load()+st.TamperedDLQ.Load()))
}

// ensureGroup creates the consumer group (from the start of the stream, so
// entries written before the first start are processed too), retrying while
// Redis is unreachable.
func (p *Processor) ensureGroup(ctx context.Context) error {
	return p.retryRedis(ctx, "xgroup_create", func() error {
		created, err := p.bus.XGroupCreate(ctx, p.cfg.Stream, p.cfg.Group, "0")
		if err == nil && created {
			p.log.Info("audit_consumer_group_initialized", slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group))
		}
		return err
	})
}
