package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
)

// producer is the checker's producer: numbered events through the audit
// package, the one Go services use. Each event carries its event id
// ("<run>-<seq>") and seq inside the signed event. A write that fails is
// retried with the same event id until it succeeds, as a careful service
// does, and everything the producer saw is recorded.
type producer struct {
	c     *cluster
	bus   *audit.Bus
	run   string
	every int // one poison event every this many (0: none)

	mu        sync.Mutex
	written   map[string]int // event id -> seq, for every write Redis acknowledged
	poison    map[string]bool
	ambiguous map[string]bool // event ids that failed at least once before a success
	errs      int             // failed attempts
	errKinds  map[string]int  // failed attempts by kind
	firstErr  time.Time
	lastErr   time.Time
	longest   time.Duration // longest time from a first failure to the next success
	outStart  time.Time
	spooled   int // events the batching producer spooled (and drained)
	sent      int // distinct events sent (acknowledged or not)

	count atomic.Int64 // events written so far
	stop  atomic.Bool
	done  chan struct{}
	err   error
}

// minReplicasTimeout is the producer's MinReplicasTimeout (shorter than its
// one-second WriteTimeout, as audit requires).
const minReplicasTimeout = 500 * time.Millisecond

// produce starts producing n events (n <= 0: until stopProducing) at about
// rate per second, one in every poisonEvery marked "poison" (0: none).
func (c *cluster) produce(n, rate, poisonEvery int) *producer {
	c.t.Helper()
	rdb := c.producerClient()
	keys, err := audit.NewKeyring(keyID, map[string][]byte{keyID: c.key})
	require.NoError(c.t, err)
	bus, err := audit.New(audit.Config{Client: rdb, Keys: keys, Stream: c.names.stream, Group: group, WriteTimeout: time.Second,
		MinReplicasAcked: c.minReplicas, MinReplicasTimeout: minReplicasTimeout}, discard)
	require.NoError(c.t, err)
	p := &producer{
		c: c, bus: bus, run: fmt.Sprintf("r%d", time.Now().UnixNano()%1e9), every: poisonEvery,
		written: map[string]int{}, poison: map[string]bool{}, ambiguous: map[string]bool{}, errKinds: map[string]int{},
		done: make(chan struct{}),
	}
	c.t.Cleanup(func() {
		p.stop.Store(true)
		<-p.done
		_ = bus.Close()
		_ = rdb.Close()
	})
	go func() {
		defer close(p.done)
		p.err = p.loop(n, rate)
	}()
	c.note("producer started: %s at about %d/s", countText(n), rate)
	return p
}

func countText(n int) string {
	if n <= 0 {
		return "events until stopped"
	}
	return fmt.Sprintf("%d events", n)
}

func (p *producer) loop(n, rate int) error {
	start := time.Now()
	for seq := 0; n <= 0 || seq < n; seq++ {
		if p.stop.Load() {
			return nil
		}
		// Pace: seq events should have taken seq/rate seconds.
		if ahead := time.Duration(seq)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
		id := fmt.Sprintf("%s-%07d", p.run, seq)
		poison := p.every > 0 && seq%p.every == p.every/2
		ev := fmt.Sprintf(`{"event_id":%q,"seq":%d,"run":%q,"actor":"user-%d","action":"record.read","outcome":"success","severity":"info"`,
			id, seq, p.run, seq%17)
		if poison {
			ev += `,"poison":true`
		}
		ev += "}"
		p.mu.Lock()
		p.sent++
		p.mu.Unlock()
		if err := p.write(id, []byte(ev)); err != nil {
			return err
		}
		p.mu.Lock()
		p.written[id] = seq
		if poison {
			p.poison[id] = true
		}
		p.mu.Unlock()
		p.count.Add(1)
	}
	return nil
}

// write retries one event until Redis acknowledges it. Only ErrUnavailable
// and ErrOutcomeUnknown are retried: anything else is a failure of the
// suite.
func (p *producer) write(id string, ev []byte) error {
	failed := false
	for {
		_, err := p.bus.Audit(context.Background(), ev)
		now := time.Now()
		if err == nil {
			p.mu.Lock()
			if failed {
				p.ambiguous[id] = true
				if d := now.Sub(p.outStart); d > p.longest {
					p.longest = d
				}
			}
			p.mu.Unlock()
			return nil
		}
		// Not written, written perhaps, or written but not confirmed by
		// enough replicas (min_replicas_acked): not acknowledged, retried
		// with the same event id, which Redis does not store twice.
		if !errors.Is(err, audit.ErrUnavailable) && !errors.Is(err, audit.ErrOutcomeUnknown) &&
			!errors.Is(err, audit.ErrNotReplicated) && !isRedirect(err) {
			return fmt.Errorf("producer: event %s: %w", id, err)
		}
		p.mu.Lock()
		if !failed {
			p.outStart = now
		}
		failed = true
		p.errs++
		kind := errKind(err)
		if p.errKinds[kind]++; kind == "other" && p.errKinds[kind] <= 3 {
			p.c.t.Logf("producer: event %s: %v", id, err)
		}
		if p.firstErr.IsZero() {
			p.firstErr = now
		}
		p.lastErr = now
		p.mu.Unlock()
		if p.stop.Load() {
			return nil // the event was never acknowledged: not counted as written
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isRedirect: a cluster node answered MOVED or ASK after the client used
// up its redirects (a slot in migration: the append's new event key is
// never on the source, and the stream not yet on the target). The node did
// not run the append, so the event was not written; but audit returns the
// error without ErrUnavailable, so a service following its docs would
// give the event up. The producer retries it and counts it under its own
// kind.
func isRedirect(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && (redis.HasErrorPrefix(rerr, "MOVED") || redis.HasErrorPrefix(rerr, "ASK"))
}

// errKind names a failure as the producer saw it, without its addresses.
func errKind(err error) string {
	if isRedirect(err) {
		return "MOVED/ASK, not ErrUnavailable"
	}
	if errors.Is(err, audit.ErrNotReplicated) {
		return "not replicated in time"
	}
	s := err.Error()
	for _, k := range []string{"connection refused", "i/o timeout", "deadline exceeded", "EOF", "connection reset",
		"LOADING", "CLUSTERDOWN", "TRYAGAIN", "no such host", "no route to host", "server is stopped", "stopped or cut off"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	return "other"
}

// wait waits until the producer wrote everything (or was stopped).
func (p *producer) wait(timeout time.Duration) {
	p.c.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.c.t.Fatalf("the producer did not finish within %s (%d written)", timeout, p.count.Load())
	}
	require.NoError(p.c.t, p.err)
	p.c.note("producer done: %d events written", p.count.Load())
}

// stopProducing ends an open-ended producer after its current event.
func (p *producer) stopProducing() {
	p.stop.Store(true)
	p.wait(time.Minute)
}

// waitWritten waits until at least n events were written.
func (p *producer) waitWritten(n int64, timeout time.Duration) {
	p.c.t.Helper()
	waitFor(p.c.t, timeout, fmt.Sprintf("%d events written", n), func() bool { return p.count.Load() >= n })
}

// produceBatched starts producing n numbered events at about rate per
// second through an audit.Producer (the batching API) with a spool in
// spoolDir. An event counts as written once its result says written,
// already there, or spooled and then drained: wait flushes, waits for the
// spool to drain and closes the Producer.
func (c *cluster) produceBatched(n, rate int, spoolDir string) *producer {
	c.t.Helper()
	rdb := c.producerClient()
	keys, err := audit.NewKeyring(keyID, map[string][]byte{keyID: c.key})
	require.NoError(c.t, err)
	bp, err := audit.NewProducer(audit.Config{Client: rdb, Keys: keys, Stream: c.names.stream, Group: group,
		MinReplicasAcked: c.minReplicas, MinReplicasTimeout: minReplicasTimeout,
		WriteTimeout: time.Second, RetryDelay: 100 * time.Millisecond, SpoolDir: spoolDir, BatchSize: 64}, discard)
	require.NoError(c.t, err)
	p := &producer{
		c: c, run: fmt.Sprintf("b%d", time.Now().UnixNano()%1e9),
		written: map[string]int{}, poison: map[string]bool{}, ambiguous: map[string]bool{}, errKinds: map[string]int{},
		done: make(chan struct{}),
	}
	c.t.Cleanup(func() {
		p.stop.Store(true)
		<-p.done
		_ = rdb.Close()
	})
	go func() {
		defer close(p.done)
		p.err = p.batchLoop(bp, n, rate)
	}()
	c.note("batching producer started: %d events at about %d/s, spool %s", n, rate, spoolDir)
	return p
}

func (p *producer) batchLoop(bp *audit.Producer, n, rate int) error {
	start := time.Now()
	type sent struct {
		id  string
		seq int
		pd  audit.Pending
	}
	var all []sent
	for seq := 0; seq < n && !p.stop.Load(); seq++ {
		if ahead := time.Duration(seq)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
		id := fmt.Sprintf("%s-%07d", p.run, seq)
		ev := fmt.Sprintf(`{"event_id":%q,"seq":%d,"run":%q,"actor":"user-%d","action":"record.read","outcome":"success","severity":"info"}`,
			id, seq, p.run, seq%17)
		pd, err := bp.Send(context.Background(), []byte(ev))
		if err != nil {
			return fmt.Errorf("batching producer: event %s: %w", id, err)
		}
		p.mu.Lock()
		p.sent++
		p.mu.Unlock()
		all = append(all, sent{id, seq, pd})
		p.count.Add(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bp.Flush(ctx); err != nil {
		return err
	}
	for bp.Stats().SpoolEvents > 0 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	st := bp.Stats()
	if err := bp.Close(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spooled = int(st.Spooled)
	for _, s := range all {
		r := s.pd.Result()
		if r.Err != nil {
			p.errs++
			p.errKinds[errKind(r.Err)]++
			continue
		}
		p.written[s.id] = s.seq
	}
	if st.SpoolEvents > 0 {
		return fmt.Errorf("batching producer: %d events still in the spool", st.SpoolEvents)
	}
	return nil
}

// forge appends n entries no producer signed, as someone with write access
// to Redis but no key would: by turns unsigned, and signed for the stream
// with the signature then changed. Every one must be dead-lettered after
// max deliveries, never handed to a plugin; check counts them.
func (c *cluster) forge(n int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		ev := fmt.Sprintf(`{"event_id":"forged-%d","timestamp":"2026-01-01T00:00:00Z","actor":"mallory","action":"user.promote","outcome":"success","severity":"info"}`, i)
		values := []any{"event", ev}
		if i%2 == 1 {
			env, err := c.keys.Sign(c.names.stream, []byte(ev))
			require.NoError(c.t, err)
			env.Sig = strings.Repeat("0", len(env.Sig))
			values = env.Values()
		}
		id, err := c.rdb.XAdd(ctx, &redis.XAddArgs{Stream: c.names.stream, Values: values}).Result()
		require.NoError(c.t, err, "XADD a forged entry")
		c.mu.Lock()
		if c.forged == nil {
			c.forged = map[string]bool{}
		}
		c.forged[id] = true
		c.mu.Unlock()
	}
	c.note("%d forged entries appended (unsigned, and a wrong signature)", n)
}
