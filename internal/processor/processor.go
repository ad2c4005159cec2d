package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/integrity"
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
	// maxBackoff caps the wait between retries of a failing Redis call.
	maxBackoff = 5 * time.Second
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
	// MaxDeliveries before an entry is dead-lettered. Default DefaultMaxDeliveries.
	MaxDeliveries int
	// ShutdownTimeout bounds the drain of in-flight entries once ctx is
	// cancelled. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Sinks by name.
	Sinks map[string]Sink
	// StopWhenIdle makes Run return once the stream is drained: nothing new
	// to read, nothing pending for the group (used by the demo and tests).
	StopWhenIdle bool
}

// Sink is where a plugin's emits go.
type Sink struct {
	// Type is "stream", "file" or "stdout".
	Type string
	// Stream for a stream sink: entries are signed and committed in the same
	// atomic step as the ack (exactly once per processed entry).
	Stream string
	// Path for a file sink (JSON lines, at least once).
	Path string
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
}

// Validate reports a configuration the loop cannot run with.
func (c *Config) Validate() error {
	var errs []error
	if c.Stream == "" || c.Group == "" || c.Consumer == "" || c.DeadLetter == "" {
		errs = append(errs, errors.New("processor: stream, group, consumer and dead-letter stream are required"))
	}
	if c.BatchSize < 1 || c.Workers < 1 || c.MaxDeliveries < 1 || c.Block <= 0 || c.MinIdle <= 0 || c.ReclaimInterval <= 0 {
		errs = append(errs, errors.New("processor: batch size, workers, max deliveries, block, min idle and reclaim interval must be positive"))
	}
	for name, s := range c.Sinks {
		switch s.Type {
		case "stream", "file", "stdout":
		default:
			errs = append(errs, fmt.Errorf("processor: sink %q: unknown type %q", name, s.Type))
		}
	}
	return errors.Join(errs...)
}

// bus is what the loop needs of Redis (a *streambus.Bus).
type bus interface {
	XGroupCreate(ctx context.Context, stream, group, start string) (bool, error)
	XReadGroup(ctx context.Context, a streambus.GroupReadArgs) (streambus.Batch, error)
	XAutoClaim(ctx context.Context, a streambus.AutoClaimArgs) (streambus.Batch, error)
	XAck(ctx context.Context, stream, group string, ids ...string) (int64, error)
	Commit(ctx context.Context, stream, group string, items ...streambus.Item) (streambus.CommitResult, error)
	DeadLetter(ctx context.Context, stream, group, dlq string, letters ...streambus.Letter) ([]string, error)
}

// Processor is the run loop. Create it with New and call Run once.
type Processor struct {
	cfg      Config
	log      *slog.Logger
	bus      bus
	rdb      redis.UniversalClient
	pipeline *host.Pipeline
	metrics  *Metrics
	lines    map[string]*lineSink // file and stdout sinks by name

	ready       atomic.Bool
	lastRead    atomic.Int64 // unix nanoseconds when a read last returned
	stalled     atomic.Bool
	failures    failureMemory
	inflightIDs idSet
	acks        ackQueue  // finished entries to acknowledge with the next read
	chunks      sync.Pool // of *[]work: result chunks, reused once committed
	stats       Stats
}

// Stats are the loop's totals since start, for summaries.
type Stats struct {
	Processed    atomic.Int64 // pipeline ended in ok and the entry was acked
	Dropped      atomic.Int64 // a plugin dropped the entry; acked
	Retried      atomic.Int64 // a plugin asked for a retry (or failed); left pending
	Rejected     atomic.Int64 // dead-lettered because a plugin rejected it
	Exhausted    atomic.Int64 // dead-lettered after max deliveries
	Tampered     atomic.Int64 // deliveries refused by verification (an entry counts each time)
	TamperedDLQ  atomic.Int64 // tampered entries dead-lettered after max deliveries
	Reclaimed    atomic.Int64 // entries claimed from idle consumers
	DeletedAlarm atomic.Int64 // pending entries found deleted or trimmed
	LateAcks     atomic.Int64 // acks that found the entry already acknowledged

	mu             sync.Mutex
	emitted        map[string]int64    // committed emits by sink name
	tamperedIDs    map[string]struct{} // distinct tampered entry ids (bounded)
	tamperedUnique int64
}

// Emitted returns the emits committed per sink name.
func (s *Stats) Emitted() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.emitted)
}

// TamperedEntries is how many distinct entries failed verification.
func (s *Stats) TamperedEntries() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tamperedUnique
}

func (s *Stats) addEmitted(sink string, n int64) {
	s.mu.Lock()
	if s.emitted == nil {
		s.emitted = map[string]int64{}
	}
	s.emitted[sink] += n
	s.mu.Unlock()
}

func (s *Stats) addTampered(id string) {
	s.Tampered.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tamperedIDs == nil {
		s.tamperedIDs = map[string]struct{}{}
	}
	if _, seen := s.tamperedIDs[id]; seen {
		return
	}
	s.tamperedUnique++
	if len(s.tamperedIDs) < maxRemembered {
		s.tamperedIDs[id] = struct{}{}
	}
}

// New checks cfg and opens the line sinks. rdb is the client behind b, used
// for the health and gauge queries.
func New(cfg Config, logger *slog.Logger, b bus, rdb redis.UniversalClient, pipeline *host.Pipeline, metrics *Metrics) (*Processor, error) {
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
	p := &Processor{cfg: cfg, log: logger, bus: b, rdb: rdb, pipeline: pipeline, metrics: metrics, lines: map[string]*lineSink{}}
	p.failures.m = map[string]failure{}
	for name, s := range cfg.Sinks {
		switch s.Type {
		case "file":
			ls, err := openFileSink(name, s.Path)
			if err != nil {
				p.closeSinks()
				return nil, err
			}
			p.lines[name] = ls
		case "stdout":
			p.lines[name] = newWriterSink(name, stdoutWriter{})
		}
	}
	return p, nil
}

// Ready reports whether Redis answers and the loop runs (for /readyz).
func (p *Processor) Ready() bool { return p.ready.Load() }

// Healthy reports whether the read loop is alive (for /healthz): false
// once no read has returned for far longer than a read may take.
func (p *Processor) Healthy() bool { return !p.stalled.Load() }

// Stats returns the loop's totals.
func (p *Processor) Stats() *Stats { return &p.stats }

func (p *Processor) closeSinks() {
	for _, s := range p.lines {
		_ = s.close()
	}
}

// work is one entry on its way through a worker to the committer. entry
// points into the batch read from Redis, which lives until committed.
type work struct {
	entry  *streambus.Entry
	result host.Result
}

// chunk returns an empty result chunk with room for n entries.
func (p *Processor) chunk(n int) *[]work {
	if c, ok := p.chunks.Get().(*[]work); ok && cap(*c) >= n {
		*c = (*c)[:0]
		return c
	}
	c := make([]work, 0, max(n, maxChunk))
	return &c
}

// release gives a committed chunk back for reuse.
func (p *Processor) release(c *[]work) {
	clear(*c) // drop references to entries and emits
	p.chunks.Put(c)
}

// Run runs the loop until ctx is cancelled (or, with StopWhenIdle, until the
// stream is drained). Shutdown order: stop reading and claiming → finish the
// entries already read, within ShutdownTimeout → commit their verdicts →
// return; the caller then closes the plugins and Redis.
func (p *Processor) Run(ctx context.Context) error {
	defer p.closeSinks()
	if err := p.ensureGroup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before Redis ever answered: nothing was read
		}
		return err
	}
	p.ready.Store(true)
	defer p.ready.Store(false)

	// Work outlives ctx by up to ShutdownTimeout, so that what was read is
	// finished and acked.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopTimer := context.AfterFunc(ctx, func() {
		p.log.Info("shutdown_started", slog.Duration("timeout", p.cfg.ShutdownTimeout))
		time.AfterFunc(p.cfg.ShutdownTimeout, cancelWork)
	})
	defer stopTimer()

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()

	// Entries travel in chunks (see feeder.send), results likewise: one
	// channel operation per chunk, not per entry. The reader runs ahead of
	// the workers by about one batch.
	jobs := make(chan []streambus.Entry, max(2*p.cfg.Workers, p.cfg.BatchSize/maxChunk))
	results := make(chan *[]work, 2*p.cfg.Workers)
	var inflight atomic.Int64 // entries handed to workers and not yet committed

	workers := make([]*host.Worker, p.cfg.Workers)
	for i := range workers {
		w, err := p.pipeline.NewWorker(workCtx)
		if err != nil {
			for _, w := range workers[:i] {
				w.Release()
			}
			return fmt.Errorf("start worker %d: %w", i, err)
		}
		workers[i] = w
	}
	obs := newObservers(p.metrics, p.pipeline)

	var producers, pool, committer sync.WaitGroup
	producers.Add(2)
	feed := feeder{jobs: jobs, inflight: &inflight, ids: &p.inflightIDs, sendCtx: workCtx, workers: p.cfg.Workers}
	go func() { defer producers.Done(); p.readLoop(readCtx, feed, stopReading) }()
	go func() { defer producers.Done(); p.reclaimLoop(readCtx, feed) }()
	for _, w := range workers {
		pool.Add(1)
		go func() {
			defer pool.Done()
			defer w.Release()
			for chunk := range jobs {
				out := p.chunk(len(chunk))
				for i := range chunk {
					e := &chunk[i]
					res := w.Process(workCtx, host.Event{
						EntryID: e.ID, Stream: e.Stream, KeyID: e.KeyID, EventID: e.EventID,
						Deliveries: uint32(min(e.Deliveries, 1<<31)), Data: e.Event,
					})
					p.checkEmits(&res)
					obs.observe(&res)
					// The worker reuses Event and Timings on its next call;
					// Timings were observed just above.
					res.Event, res.Timings = nil, nil
					*out = append(*out, work{entry: e, result: res})
				}
				results <- out
			}
		}()
	}
	committer.Add(1)
	go func() { defer committer.Done(); p.commitLoop(workCtx, results, &inflight) }()

	gaugeCtx, stopGauges := context.WithCancel(ctx)
	go p.gaugeLoop(gaugeCtx)
	go p.watchLoop(gaugeCtx)
	defer stopGauges()

	producers.Wait()
	close(jobs)
	pool.Wait()
	close(results)
	committer.Wait()
	if err := workCtx.Err(); err != nil && ctx.Err() != nil {
		p.log.Warn("shutdown_timed_out", slog.String("detail", "entries still in flight stay pending and are redelivered"))
	}
	p.log.Info("processor_stopped",
		slog.Int64("processed", p.stats.Processed.Load()), slog.Int64("dropped", p.stats.Dropped.Load()),
		slog.Int64("dead_lettered", p.stats.Rejected.Load()+p.stats.Exhausted.Load()+p.stats.TamperedDLQ.Load()))
	return nil
}

type stdoutWriter struct{}

func (stdoutWriter) Write(b []byte) (int, error) { return os.Stdout.Write(b) }

// ensureGroup creates the consumer group (from the start of the stream, so
// entries written before the first start are processed too), retrying while
// Redis is unreachable.
func (p *Processor) ensureGroup(ctx context.Context) error {
	return p.retry(ctx, "xgroup_create", func() error {
		created, err := p.bus.XGroupCreate(ctx, p.cfg.Stream, p.cfg.Group, "0")
		if err == nil && created {
			p.log.Info("audit_consumer_group_initialized", slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group))
		}
		return err
	})
}

// retry runs op until it succeeds or ctx ends, backing off (capped) between
// failures, logging the first failure and then at most one line a minute.
func (p *Processor) retry(ctx context.Context, opName string, op func() error) error {
	backoff := 50 * time.Millisecond
	var lastLog time.Time
	failures := 0
	for {
		err := op()
		if err == nil {
			if failures > 0 {
				p.log.Info("redis_recovered", slog.String("op", opName), slog.Int("failures", failures))
				p.ready.Store(true)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		p.ready.Store(false)
		p.metrics.RedisErrors.WithLabelValues(opName).Inc()
		if time.Since(lastLog) > time.Minute {
			p.log.Error("redis_operation_failed", slog.String("op", opName), slog.Int("failures", failures),
				slog.Duration("retry_in", backoff), slog.String("error", err.Error()))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// failureMemory remembers why an entry last failed, for its dead letter.
type failureMemory struct {
	mu sync.Mutex
	m  map[string]failure
}

type failure struct{ plugin, message string }

func (f *failureMemory) set(id string, v failure) {
	f.mu.Lock()
	if len(f.m) >= maxRemembered {
		for k := range f.m { // forget an arbitrary one: memory stays bounded
			delete(f.m, k)
			break
		}
	}
	f.m[id] = v
	f.mu.Unlock()
}

func (f *failureMemory) take(id string) (failure, bool) {
	f.mu.Lock()
	v, ok := f.m[id]
	delete(f.m, id)
	f.mu.Unlock()
	return v, ok
}

// idSet is the set of entry ids in flight in this process: handed to a
// worker and not yet committed.
type idSet struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (s *idSet) add(entries []streambus.Entry) {
	s.mu.Lock()
	if s.ids == nil {
		s.ids = make(map[string]struct{}, len(entries))
	}
	for i := range entries {
		s.ids[entries[i].ID] = struct{}{}
	}
	s.mu.Unlock()
}

func (s *idSet) remove(entries []streambus.Entry) {
	s.mu.Lock()
	for i := range entries {
		delete(s.ids, entries[i].ID)
	}
	s.mu.Unlock()
}

// removeWork removes the batch's entries, except those in keep.
func (s *idSet) removeWork(batch []work, keep map[string]struct{}) {
	s.mu.Lock()
	for i := range batch {
		if _, kept := keep[batch[i].entry.ID]; !kept {
			delete(s.ids, batch[i].entry.ID)
		}
	}
	s.mu.Unlock()
}

func (s *idSet) removeIDs(ids []string) {
	s.mu.Lock()
	for _, id := range ids {
		delete(s.ids, id)
	}
	s.mu.Unlock()
}

// without returns entries less those in flight.
func (s *idSet) without(entries []streambus.Entry) []streambus.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := entries[:0:0]
	for _, e := range entries {
		if _, busy := s.ids[e.ID]; !busy {
			out = append(out, e)
		}
	}
	return out
}

// checkEmits stamps every emit of an ok result as the sink will store it
// and turns the result into a reject when one cannot be: an emit that is
// not a JSON object, or whose event_id or timestamp is malformed, could
// never be committed, and retrying it would stall every entry behind it.
func (p *Processor) checkEmits(r *host.Result) {
	if r.Verdict != abi.VerdictOK {
		return
	}
	now := time.Now()
	for i := range r.Emits {
		stamped, _, err := integrity.Stamp(r.Emits[i].Event, now)
		if err != nil {
			r.Verdict = abi.VerdictReject
			r.Plugin = r.Emits[i].Plugin
			r.Message = fmt.Sprintf("emitted an invalid event for sink %q: %v", r.Emits[i].Sink, err)
			r.Emits = nil
			return
		}
		r.Emits[i].Event = stamped
	}
}
