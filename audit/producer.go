package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// Defaults of the Producer's Config fields.
const (
	DefaultQueueSize = 16384
	DefaultBatchSize = 256
	// DefaultPipeline is how many batches a Producer sends per round trip.
	// Redis waits for the next round trip while the Producer reads the
	// last reply and sends again: 8 batches (2,048 events) halve those
	// gaps against 4 (docs/performance.md, "Producers").
	DefaultPipeline = 8
	// DefaultDedupWindow is how long Redis remembers a producer's sequence
	// after its last write (a retry or re-run within it is not doubled).
	DefaultDedupWindow = streambus.DefaultDedupWindow
	// DefaultMaxRetryDelay caps the Producer's backoff between attempts.
	DefaultMaxRetryDelay = 5 * time.Second
)

// ErrQueueFull: Send could not queue the event before its context ended
// (the queue holds Config.QueueSize events and Redis is slow or away). The
// event was not written. It wraps ErrUnavailable.
var ErrQueueFull = fmt.Errorf("%w: producer queue full", ErrUnavailable)

// ErrClosed: the Producer is closed. The event was not written.
var ErrClosed = errors.New("audit: producer closed")

// Result is what became of one event given to Producer.Send.
type Result struct {
	// EventID is the event's event_id.
	EventID string
	// EntryID is the stream entry id; "" when the event was spooled or
	// written before (Duplicate), or not written.
	EntryID string
	// Duplicate: Redis already held this event (the same producer and
	// sequence, for example a re-run of the same file): it was not written
	// again.
	Duplicate bool
	// Spooled: Redis was away; the event is signed and fsynced in the
	// spool, and the Producer (or the next one on the same spool) sends it
	// when Redis is back.
	Spooled bool
	// Err is nil when the event was written, found written, or spooled.
	// Otherwise it wraps ErrUnavailable (not written), ErrOutcomeUnknown
	// (sent, no answer: retry with the same event id), or
	// ErrNotReplicated (with Config.MinReplicasAcked: appended on the
	// master as EntryID, and not confirmed by enough replicas before Close
	// gave up; a failover may lose it).
	Err error
}

// Pending is an event queued by Send: Done is closed once its Result is
// known.
type Pending struct {
	b *batch
	i int
}

// Done is closed when the Result is known.
func (p Pending) Done() <-chan struct{} { return p.b.done }

// Result waits for the event's result.
func (p Pending) Result() Result {
	<-p.b.done
	return p.b.results[p.i]
}

// Wait returns the event's result, or ctx's error when ctx ends first (the
// event stays queued).
func (p Pending) Wait(ctx context.Context) (Result, error) {
	select {
	case <-p.b.done:
		return p.b.results[p.i], nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// batch is a run of signed entries (events, and the chain's checkpoints)
// with consecutive sequence numbers.
type batch struct {
	streambus.AppendBatch
	arena   []byte
	offs    []int    // per entry: event start, sig start; arena end closes the last
	results []Result // per entry; a checkpoint's is never handed out
	events  int      // entries that are events
	done    chan struct{}
	// landed is what the master did with the batch in a round trip whose
	// replicas did not confirm it (Config.MinReplicasAcked): the entry ids
	// of the entries it wrote, which a later round trip, finding them
	// there, reports as skipped.
	landed *streambus.AppendResult
}

// landedID is the entry id a round trip the replicas had not confirmed
// gave entry i, "" when none did.
func (b *batch) landedID(i int) string {
	if l := b.landed; l != nil && i >= l.Skipped && i-l.Skipped < len(l.IDs) {
		return l.IDs[i-l.Skipped]
	}
	return ""
}

// isEvent says whether entry i is an event (not a checkpoint).
func (b *batch) isEvent(i int) bool {
	return b.Kinds == nil || b.Kinds[i] == integrity.KindEvent
}

// countEvents returns how many of the first n entries are events.
func (b *batch) countEvents(n int) int {
	if b.Kinds == nil {
		return n
	}
	k := 0
	for _, kind := range b.Kinds[:n] {
		if kind == integrity.KindEvent {
			k++
		}
	}
	return k
}

func (b *batch) seal() {
	b.Events = make([][]byte, len(b.offs)/2)
	b.Sigs = make([][]byte, len(b.offs)/2)
	for i := range b.Events {
		end := len(b.arena)
		if 2*i+2 < len(b.offs) {
			end = b.offs[2*i+2]
		}
		b.Events[i] = b.arena[b.offs[2*i]:b.offs[2*i+1]:b.offs[2*i+1]]
		b.Sigs[i] = b.arena[b.offs[2*i+1]:end:end]
	}
}

func (b *batch) resolve(f func(i int, r *Result)) {
	for i := range b.results {
		f(i, &b.results[i])
	}
	close(b.done)
}

// ProducerStats are a Producer's counters since New.
type ProducerStats struct {
	// Queued events wait in memory for their result.
	Queued int64
	// Written, Duplicates, Spooled and Failed count results.
	Written, Duplicates, Spooled, Failed uint64
	// SpoolEvents and SpoolBytes wait in the spool (0 without one).
	SpoolEvents, SpoolBytes int64
}

// streamProducer is a Producer of one shard: it appends to one stream.
type streamProducer struct {
	cfg   Config
	bus   *Bus
	keys  *integrity.Keyring
	chain *integrity.Chain
	id    string
	log   *slog.Logger
	spool *spool

	space chan struct{} // one token per queued event
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	cur     *batch
	queue   []*batch // sealed, waiting for the writer
	last    *batch   // the last batch handed to the writer
	nextSeq uint64   // of the next entry, for the producer key
	// nextEvent numbers events (checkpoints not counted): derived event
	// ids and the events a re-run skips (heldEvents) go by it.
	nextEvent  uint64
	heldEvents uint64
	heldLayout string // the shard layout the earlier run recorded
	closed     bool

	queued                         atomic.Int64
	written, dups, spooled, failed atomic.Uint64
	spoolEvents, spoolBytes        atomic.Int64
	closeCtx                       atomic.Pointer[context.Context]
	derivedIDs                     bool
}

// newStreamProducer returns the Producer of one stream (cfg.Stream) and
// starts its writer. With Config.SpoolDir it opens
// (and locks) the spool, whose events from an earlier run are sent first.
// Without Config.ProducerID it does not contact Redis; with one it first
// sends what the spool holds and reads how many of the producer's events
// Redis holds already (within WriteTimeout each; Redis away, it goes on),
// so that Send passes over them without signing them into the new chain.
// Close it to flush and stop.
func newStreamProducer(cfg Config, logger *slog.Logger) (*streamProducer, error) {
	b, err := New(cfg, logger)
	if err != nil {
		return nil, err
	}
	p := &streamProducer{
		cfg: b.cfg, bus: b, keys: b.cfg.Keys.k, log: b.log,
		space: make(chan struct{}, b.cfg.QueueSize),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		id:    b.cfg.ProducerID, nextSeq: 1, nextEvent: 1,
	}
	p.chain, err = integrity.NewChain(p.keys, b.cfg.Source, integrity.ChainConfig{
		CheckpointEvery: b.cfg.CheckpointEvery, CheckpointInterval: b.cfg.CheckpointInterval})
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	p.derivedIDs = p.id != ""
	if p.derivedIDs && b.cfg.shard > 0 {
		p.id = fmt.Sprintf("%s/%d", p.id, b.cfg.shard)
	}
	if p.id == "" {
		var r [12]byte
		_, _ = rand.Read(r[:])
		p.id = "p-" + hex.EncodeToString(r[:])
	}
	if b.cfg.SpoolDir != "" {
		p.spool, err = openSpool(b.cfg.SpoolDir, b.cfg.SpoolMaxBytes)
		if err != nil {
			_ = b.Close()
			return nil, err
		}
		ev, by := p.spool.depth()
		p.spoolEvents.Store(ev)
		p.spoolBytes.Store(by)
		if ev > 0 {
			p.log.LogAttrs(context.Background(), slog.LevelInfo, "audit_spool_found",
				slog.String("dir", b.cfg.SpoolDir), slog.Int64("events", ev), slog.Int64("bytes", by))
		}
	}
	if p.derivedIDs {
		// A named producer learns how many of its events Redis holds
		// before it signs any, the spool of an earlier run sent first
		// when Redis answers.
		if p.spool != nil && p.spoolEvents.Load() > 0 {
			(&writer{p: p, delay: p.cfg.RetryDelay}).drain()
		}
		p.heldEvents, p.heldLayout = p.readHeld()
	}
	go p.run()
	go p.runCheckpoints()
	return p, nil
}

// readHeld returns how many events of the named producer Redis holds from
// an earlier run (0 when it does not say within WriteTimeout): Send
// resolves those as Duplicate without signing them, so that this run's
// chain has no entry that is never written.
func (p *streamProducer) readHeld() (held uint64, layout string) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
	defer cancel()
	raw, err := p.bus.rdb.Get(ctx, streambus.ProducerKey(p.cfg.Stream, p.id)).Result()
	if err != nil {
		return 0, ""
	}
	// "<source> <last seq> <last event> [<layout>]", or a bare number.
	f := strings.Fields(raw)
	at := len(f) - 1
	if len(f) >= 3 {
		at = 2
	}
	if len(f) == 4 {
		layout = f[3]
	}
	n, err := strconv.ParseUint(f[at], 10, 64)
	if err != nil {
		return 0, ""
	}
	return n, layout
}

// Source returns the source id the Producer signs its chain as:
// "<Config.Source>/<session>".
func (p *streamProducer) Source() string { return p.chain.Source() }

// runCheckpoints adds the chain's checkpoints due by time (every
// Config.CheckpointInterval, also when idle) until Close.
func (p *streamProducer) runCheckpoints() {
	interval := p.cfg.CheckpointInterval
	if interval <= 0 {
		interval = integrity.DefaultCheckpointInterval
	}
	t := time.NewTicker(min(max(interval/10, time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			added := false
			if !p.closed {
				added = p.addCheckpoints(p.chain.Due(time.Now()))
			}
			p.mu.Unlock()
			if added {
				p.kick()
			}
		}
	}
}

// addCheckpoints appends signed checkpoints to the filling batch, in
// chain order; p.mu is held. A checkpoint that could not be signed is
// logged: the chain goes on, and a reader misses only that checkpoint.
func (p *streamProducer) addCheckpoints(envs []integrity.StreamEnvelope, err error) bool {
	if err != nil {
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "audit_checkpoint_failed", slog.String("error", err.Error()))
	}
	for _, env := range envs {
		b := p.cur
		if b == nil {
			b = p.newBatch()
			p.cur = b
		}
		start := len(b.arena)
		b.arena = append(b.arena, env.Event...)
		sigAt := len(b.arena)
		b.arena = append(b.arena, env.Sig...)
		p.addEntry(b, env.Link, env.EventID, start, sigAt)
	}
	return len(envs) > 0
}

// addEntry records the entry just appended to b's arena; p.mu is held.
func (p *streamProducer) addEntry(b *batch, link integrity.Link, id string, start, sigAt int) {
	if len(b.results) == 0 {
		b.Source, b.ChainSeq, b.Prev = link.Source, link.Seq, link.Prev
	}
	b.offs = append(b.offs, start, sigAt)
	b.Kinds = append(b.Kinds, link.Kind)
	b.results = append(b.results, Result{EventID: id})
	b.EventIDs = append(b.EventIDs, id)
	if link.Kind == integrity.KindEvent {
		b.events++
	}
	p.nextSeq++
	if len(b.results) >= p.cfg.BatchSize {
		p.handOff()
	}
}

// ID is the producer's name in Redis (Config.ProducerID, or a random one).
func (p *streamProducer) ID() string { return p.id }

// SendWithID is Send giving the event_id to use when the event has none
// ("" lets the Producer choose: a UUIDv7, or, with Config.ProducerID set, an
// id derived from the producer and the sequence number, so that sending the
// same sequence again gives the same ids).
func (p *streamProducer) SendWithID(ctx context.Context, event any, eventID string) (Pending, error) {
	raw, err := encodeEvent(event)
	if err != nil {
		return Pending{}, err
	}
	info, err := p.keys.CheckEvent(raw)
	if err != nil {
		return Pending{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if eventID != "" && !plainID(eventID) {
		return Pending{}, fmt.Errorf("%w: event id %q: want 1 to 128 of [A-Za-z0-9._:-]", ErrInvalidEvent, truncateID(eventID))
	}
	select {
	case p.space <- struct{}{}:
	default:
		select {
		case p.space <- struct{}{}:
		case <-ctx.Done():
			return Pending{}, fmt.Errorf("%w: %d events wait: %w", ErrQueueFull, p.queued.Load(), ctx.Err())
		case <-p.stop:
			return Pending{}, ErrClosed
		}
	}
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.space
		return Pending{}, ErrClosed
	}
	evNo := p.nextEvent
	id := info.ID
	if id == "" {
		switch {
		case eventID != "":
			id = eventID
		case p.derivedIDs:
			id = integrity.DerivedEventID(p.id, evNo)
		default:
			id = integrity.NewEventID(now)
		}
	} else {
		id = string([]byte(id)) // raw may be the caller's buffer
	}
	if evNo <= p.heldEvents {
		// An earlier run of this named producer wrote it.
		p.nextEvent++
		p.mu.Unlock()
		<-p.space
		p.dups.Add(1)
		b := &batch{results: []Result{{EventID: id, Duplicate: true}}, done: make(chan struct{})}
		close(b.done)
		return Pending{b: b}, nil
	}
	b := p.cur
	if b == nil {
		b = p.newBatch()
		p.cur = b
	}
	p.nextEvent++ // after newBatch: its FirstEvent is evNo
	i := len(b.results)
	start := len(b.arena)
	b.arena = integrity.AppendStamped(b.arena, raw, info, id, now)
	sigAt := len(b.arena)
	var link integrity.Link
	b.arena, link, err = p.chain.AppendSign(b.arena, p.cfg.Stream, b.arena[start:sigAt], now)
	if err != nil {
		b.arena = b.arena[:start]
		p.nextEvent--
		p.mu.Unlock()
		<-p.space
		return Pending{}, ErrClosed
	}
	p.addEntry(b, link, id, start, sigAt)
	p.addCheckpoints(p.chain.Due(now))
	p.mu.Unlock()
	p.queued.Add(1)
	p.kick()
	return Pending{b: b, i: i}, nil
}

func (p *streamProducer) newBatch() *batch {
	b := &batch{done: make(chan struct{})}
	b.Stream, b.Producer, b.FirstSeq, b.KeyID = p.cfg.Stream, p.id, p.nextSeq, p.keys.ActiveKeyID()
	b.FirstEvent = p.nextEvent
	if p.derivedIDs {
		b.Layout = p.cfg.layout
	}
	b.results = make([]Result, 0, p.cfg.BatchSize)
	b.arena = make([]byte, 0, p.cfg.BatchSize*512)
	b.offs = make([]int, 0, 2*p.cfg.BatchSize)
	b.EventIDs = make([]string, 0, p.cfg.BatchSize)
	b.Kinds = make([]string, 0, p.cfg.BatchSize)
	return b
}

// handOff moves the filling batch to the writer's queue; p.mu is held.
func (p *streamProducer) handOff() {
	if p.cur == nil {
		return
	}
	p.cur.seal()
	p.queue = append(p.queue, p.cur)
	p.last = p.cur
	p.cur = nil
}

func (p *streamProducer) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns up to n batches for the writer, the filling one included
// when nothing else waits, or nil when there is nothing.
func (p *streamProducer) take(n int) []*batch {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		p.handOff()
	}
	k := min(n, len(p.queue))
	if k == 0 {
		return nil
	}
	out := make([]*batch, k)
	copy(out, p.queue)
	p.queue = append(p.queue[:0], p.queue[k:]...)
	return out
}

// Flush waits until every event sent before it has its result, or until ctx
// ends.
func (p *streamProducer) Flush(ctx context.Context) error {
	p.mu.Lock()
	p.handOff()
	last := p.last
	p.mu.Unlock()
	if last == nil {
		return nil
	}
	p.kick()
	select {
	case <-last.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: flush: %d events still wait: %w", p.queued.Load(), ctx.Err())
	case <-p.done:
		<-last.done
		return nil
	}
}

// Close flushes, stops the writer and releases the spool and the Redis
// client the Producer created. When ctx ends before every event has its
// result, what is still queued is spooled (with Config.SpoolDir) or
// resolved with ErrUnavailable (never sent) or ErrOutcomeUnknown (sent, no
// answer), and Close says how many.
func (p *streamProducer) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	// The closing checkpoint goes last, through the writer (or the spool)
	// like every entry.
	p.addCheckpoints(p.chain.Close(time.Now()))
	p.mu.Unlock()
	ferr := p.Flush(ctx)
	p.closeCtx.Store(&ctx)
	close(p.stop)
	<-p.done
	var errs []error
	if ferr != nil {
		if n := p.failed.Load(); n > 0 {
			what := "not written"
			if p.cfg.MinReplicasAcked > 0 {
				what = "not written, or written and not confirmed by the replicas"
			}
			errs = append(errs, fmt.Errorf("audit: close: %d event(s) %s (see their results)", n, what))
		} else {
			errs = append(errs, ferr)
		}
	}
	if p.spool != nil {
		errs = append(errs, p.spool.close())
	}
	errs = append(errs, p.bus.Close())
	return errors.Join(errs...)
}

// Stats returns the Producer's counters: the spool's depth among them, for
// a service's metrics.
func (p *streamProducer) Stats() ProducerStats {
	return ProducerStats{
		Queued: p.queued.Load(), Written: p.written.Load(), Duplicates: p.dups.Load(),
		Spooled: p.spooled.Load(), Failed: p.failed.Load(),
		SpoolEvents: p.spoolEvents.Load(), SpoolBytes: p.spoolBytes.Load(),
	}
}

// run is the writer: it sends batches in order until Close.
func (p *streamProducer) run() {
	defer close(p.done)
	p.bus.warnNotDurable(context.Background())
	w := &writer{p: p, delay: p.cfg.RetryDelay}
	for {
		if p.spool != nil && p.spoolEvents.Load() > 0 && !w.drain() {
			// Redis is still away: wait, spooling what comes meanwhile.
			if !w.waitSpooling() {
				w.finish()
				return
			}
			continue
		}
		batches := p.take(p.cfg.Pipeline)
		if batches == nil {
			select {
			case <-p.wake:
				continue
			case <-p.stop:
				if batches = p.take(1 << 30); batches == nil {
					return
				}
				w.closing = true
			}
		}
		w.deliver(batches)
		if w.closing && w.gaveUp {
			w.finish()
			return
		}
	}
}

// writer holds the writer goroutine's retry state.
type writer struct {
	p       *streamProducer
	delay   time.Duration
	closing bool
	gaveUp  bool
}

func (w *writer) release(b *batch) {
	n := b.events
	w.p.queued.Add(-int64(n))
	for range n {
		<-w.p.space
	}
}

// deliver sends batches until each has its result: written, spooled (when
// Redis stays away for WriteTimeout and there is a spool), or failed (when
// Close's context ends).
func (w *writer) deliver(batches []*batch) {
	p := w.p
	var (
		firstFail time.Time
		sent      bool
		lastErr   error
	)
	for len(batches) > 0 {
		ab := make([]*streambus.AppendBatch, len(batches))
		for i, b := range batches {
			ab[i] = &b.AppendBatch
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
		res, err := p.bus.bus.AppendBatches(ctx, ab, p.cfg.MaxLen, p.cfg.DedupWindow)
		cancel()
		done := 0
		if errors.Is(err, streambus.ErrNotReplicated) {
			// The master did what res says; the replicas did not confirm
			// it. Every batch goes again; what this round wrote resolves
			// with the ids it got here, once a round is confirmed.
			for i := range res {
				if res[i].Err == nil && batches[i].landed == nil {
					batches[i].landed = &res[i]
				}
			}
		}
		if err == nil {
			for i, r := range res {
				if r.Err != nil && len(r.IDs) == 0 && r.Skipped == 0 {
					err = r.Err
					if !streambus.IsRedisError(r.Err) && !errors.Is(r.Err, streambus.ErrSeqGap) {
						sent = true
					}
					break
				}
				if r.Err != nil {
					// Part of the batch was written: send it again, the
					// script skips what is there.
					err = r.Err
					break
				}
				w.complete(batches[i], r)
				done++
			}
		} else if !notSent(err) {
			sent = true
		}
		batches = batches[done:]
		if err == nil {
			w.delay = p.cfg.RetryDelay
			return
		}
		lastErr = err
		if firstFail.IsZero() {
			firstFail = time.Now()
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "audit_append_failed",
				slog.String("stream", p.cfg.Stream), slog.Int("batches", len(batches)), slog.String("error", err.Error()))
		}
		if p.spool != nil && time.Since(firstFail) >= p.cfg.WriteTimeout {
			for _, b := range batches {
				w.spoolBatch(b, sent)
			}
			return
		}
		if !w.sleep() {
			// Close's context ended: give the rest up.
			w.gaveUp = true
			for _, b := range batches {
				w.fail(b, sent, lastErr)
			}
			return
		}
	}
}

func (w *writer) complete(b *batch, r streambus.AppendResult) {
	p := w.p
	dups := 0
	b.resolve(func(i int, res *Result) {
		if i >= r.Skipped {
			res.EntryID = r.IDs[i-r.Skipped]
		} else if id := b.landedID(i); id != "" {
			res.EntryID = id // written by a round the replicas had not confirmed yet
		} else {
			res.Duplicate = true
			if b.isEvent(i) {
				dups++
			}
		}
	})
	p.dups.Add(uint64(dups))
	p.written.Add(uint64(b.events - dups))
	w.release(b)
}

func (w *writer) fail(b *batch, sent bool, err error) {
	class := ErrUnavailable
	if sent {
		class = ErrOutcomeUnknown
	}
	e := fmt.Errorf("%w: %w", class, err)
	b.resolve(func(i int, res *Result) {
		if id := b.landedID(i); id != "" {
			// The master took it and answered; only the replicas' word is
			// missing.
			res.EntryID = id
			res.Err = fmt.Errorf("%w: event %s was appended on the master as entry %s, and not confirmed by %d replica(s) before the producer closed (last error: %w): "+
				"it is lost if the master fails over before a replica has it", ErrNotReplicated, res.EventID, id, w.p.cfg.MinReplicasAcked, err)
			return
		}
		res.Err = e
	})
	w.p.failed.Add(uint64(b.events))
	w.release(b)
}

// sleep waits before the next attempt; false when Close's context ended.
func (w *writer) sleep() bool {
	d := w.delay
	w.delay = min(2*w.delay, DefaultMaxRetryDelay)
	t := time.NewTimer(d)
	defer t.Stop()
	var closeDone <-chan struct{}
	if c := w.p.closeCtx.Load(); c != nil {
		closeDone = (*c).Done()
	}
	select {
	case <-t.C:
		return true
	case <-closeDone:
		return false
	case <-w.p.stop:
		if c := w.p.closeCtx.Load(); c != nil {
			select {
			case <-(*c).Done():
				return false
			case <-t.C:
				return true
			}
		}
		<-t.C
		return true
	}
}

// notSent tells errors raised before a command reached Redis (or that Redis
// refused without running it) from those after which it may have run.
func notSent(err error) bool {
	return streambus.IsRedisError(err) || errors.Is(err, streambus.ErrSeqGap) || dialError(err)
}

func plainID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func truncateID(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// spoolBatch writes b to the spool and resolves it: Spooled, or failed
// when the spool refuses it (full, or a disk error).
func (w *writer) spoolBatch(b *batch, sent bool) {
	p := w.p
	if err := p.spool.append(&b.AppendBatch); err != nil {
		p.log.LogAttrs(context.Background(), slog.LevelError, "audit_spool_refused",
			slog.String("dir", p.cfg.SpoolDir), slog.Int("events", len(b.results)), slog.String("error", err.Error()))
		if sent {
			err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		b.resolve(func(_ int, res *Result) { res.Err = err })
		p.failed.Add(uint64(b.events))
		w.release(b)
		return
	}
	b.resolve(func(_ int, res *Result) { res.Spooled = true })
	p.spooled.Add(uint64(b.events))
	w.setDepth()
	w.release(b)
}

func (w *writer) setDepth() {
	ev, by := w.p.spool.depth()
	w.p.spoolEvents.Store(ev)
	w.p.spoolBytes.Store(by)
}

// drain sends the spool's records in order; true once it is empty.
func (w *writer) drain() bool {
	p := w.p
	for {
		rec, err := p.spool.peek()
		w.setDepth()
		if err != nil {
			p.log.LogAttrs(context.Background(), slog.LevelError, "audit_spool_unreadable",
				slog.String("dir", p.cfg.SpoolDir), slog.String("error", err.Error()))
			return false
		}
		if rec == nil {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
		res, err := p.bus.bus.AppendBatches(ctx, []*streambus.AppendBatch{rec}, p.cfg.MaxLen, p.cfg.DedupWindow)
		if err == nil && res[0].Err != nil {
			err = res[0].Err
			if errors.Is(err, streambus.ErrSeqGap) {
				// Redis lost part of this producer's sequence (a restart
				// without AOF): forget the sequence rather than hold the
				// spool forever; the events are sent.
				p.log.LogAttrs(ctx, slog.LevelWarn, "audit_spool_sequence_reset",
					slog.String("producer", rec.Producer), slog.String("error", err.Error()))
				_ = p.bus.rdb.Del(ctx, streambus.ProducerKey(rec.Stream, rec.Producer)).Err()
			}
		}
		cancel()
		if err != nil {
			p.log.LogAttrs(context.Background(), slog.LevelDebug, "audit_spool_drain_failed",
				slog.String("dir", p.cfg.SpoolDir), slog.String("error", err.Error()))
			return false
		}
		p.spool.ack()
		rb := &batch{AppendBatch: *rec}
		skipped := rb.countEvents(res[0].Skipped)
		p.dups.Add(uint64(skipped))
		p.written.Add(uint64(rb.countEvents(rec.Len()) - skipped))
		w.delay = p.cfg.RetryDelay
		if ev, _ := p.spool.depth(); ev == 0 {
			p.log.LogAttrs(context.Background(), slog.LevelInfo, "audit_spool_drained", slog.String("dir", p.cfg.SpoolDir))
		}
	}
}

// waitSpooling waits before the next drain attempt, spooling the batches
// that come meanwhile; false once the Producer is closing (everything
// queued is spooled by then).
func (w *writer) waitSpooling() bool {
	p := w.p
	d := w.delay
	w.delay = min(2*w.delay, DefaultMaxRetryDelay)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-p.wake:
			w.spoolAll()
		case <-p.stop:
			w.spoolAll()
			return false
		}
	}
}

// spoolAll spools every batch queued, the filling one last (take hands it
// off once the queue is empty): nothing waits in memory for a wake-up that
// may not come.
func (w *writer) spoolAll() {
	for bs := w.p.take(1 << 30); bs != nil; bs = w.p.take(1 << 30) {
		for _, b := range bs {
			w.spoolBatch(b, false)
		}
	}
}

// finish makes a last attempt to drain the spool before the writer stops.
func (w *writer) finish() {
	if w.p.spool != nil {
		w.drain()
	}
}
