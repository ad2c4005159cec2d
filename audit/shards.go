package audit

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/streambus"

	"github.com/auditproc/auditproc/internal/shard"
)

// Producer appends events in pipelined batches, for services that audit at
// a high rate: Send queues an event and returns at once; a background
// writer signs nothing twice, sends Config.Pipeline batches of up to
// Config.BatchSize events per round trip, in order, and resolves each
// event's Pending. A batch whose reply is lost is sent again as it was: a
// Lua script in Redis keeps the producer's last sequence number (in a key
// next to the stream) and skips what it already holds, so nothing is
// doubled. With Config.SpoolDir, batches Redis does not take within
// Config.WriteTimeout go to a local fsynced spool and are sent, in order,
// once Redis is back.
//
// Events are signed with envelope version 2, like Bus.Audit's: one chain
// per Producer (source id "<Config.Source>/<random session>"), shared by
// every goroutine that calls Send (signing is serialised under one lock,
// in the order entries go to the stream), with a signed checkpoint every
// Config.CheckpointEvery events or Config.CheckpointInterval (also when
// idle) and a closing one in Close. Checkpoints travel in the batches, and
// through the spool, like events, so a spooled and drained run still reads
// as one whole chain (`auditproc verify`, docs/trail.md).
//
// With Config.MinReplicasAcked, a round trip waits for the replicas (Redis
// WAIT) and an event resolves only once they hold it: a batch the master
// took but the replicas did not confirm in time is sent again, as after a
// lost reply (the script skips what is there, and the round trip waits
// again), and resolves with the entry ids of its first append. Redis away,
// it is spooled like any batch not taken; Close giving up, its events
// resolve with ErrNotReplicated and their entry ids.
//
// A Producer is safe for concurrent use; events from one goroutine keep
// their order.
//
// With Config.Shards above 1 the Producer writes a sharded trail: each
// event goes to the stream of its shard (Config.PartitionKey), through a
// writer, chain, queue and spool of that shard's own, so that events with
// the same key keep their order.
type Producer struct {
	// shards are the shards' writers, then any that only drain a spool
	// left by a Producer of more shards (SpoolDir/shard-<k>, k >= n).
	shards []*streamProducer
	n      int // the shards events go to
	key    string
	spread shard.Spread
}

// NewProducer returns a Producer writing with cfg (see Config for the
// Producer's fields) and starts its writer. With Config.SpoolDir it opens
// (and locks) the spool, whose events from an earlier run are sent first.
// Without Config.ProducerID it does not contact Redis; with one it first
// sends what the spool holds and reads how many of the producer's events
// Redis holds already (within WriteTimeout each; Redis away, it goes on),
// so that Send passes over them without signing them into the new chain.
// Close it to flush and stop.
//
// With Config.Shards above 1, shard k > 0 writes to its stream
// (docs/scaling.md) with the Redis client of shard 0, the name
// "<ProducerID>/<k>" in Redis (and for its derived event ids), a spool in
// SpoolDir/shard-<k>, and an equal part of QueueSize and SpoolMaxBytes. A
// named producer is refused when its earlier run, within the dedup window,
// wrote with another shard count or partition key, and any producer when
// the trail's processors read fewer shards than it would write.
func NewProducer(cfg Config, logger *slog.Logger) (*Producer, error) {
	n := max(1, cfg.Shards)
	if n > shard.Max {
		return nil, fmt.Errorf("%w: Shards %d: want 1 to %d", ErrInvalidConfig, cfg.Shards, shard.Max)
	}
	c := cfg
	if n > 1 {
		c.setDefaults()
		c.QueueSize = max(c.BatchSize, c.QueueSize/n)
		c.SpoolMaxBytes = max(1, c.SpoolMaxBytes/int64(n))
		c.layout = fmt.Sprintf("%d/%08x", n, crc32.ChecksumIEEE([]byte(cfg.PartitionKey)))
	}
	first, err := newStreamProducer(c, logger)
	if err != nil {
		return nil, err
	}
	if err := sameLayout(first, c.layout); err != nil {
		_ = first.Close(context.Background())
		return nil, err
	}
	if err := shardsRead(first.bus.rdb, first.cfg.Stream, n, first.cfg.WriteTimeout); err != nil {
		_ = first.Close(context.Background())
		return nil, err
	}
	p := &Producer{shards: []*streamProducer{first}, n: n, key: cfg.PartitionKey}
	open := func(k int, sc Config) error {
		sc.Stream = shard.Key(first.cfg.Stream, k)
		sc.Client = first.bus.rdb
		sc.shard = k
		sp, err := newStreamProducer(sc, logger)
		if err == nil {
			p.shards = append(p.shards, sp)
			if k < n {
				err = sameLayout(sp, c.layout)
			}
		}
		if err != nil {
			_ = p.Close(context.Background())
			return fmt.Errorf("shard %d (%s): %w", k, sc.Stream, err)
		}
		return nil
	}
	for k := 1; k < n; k++ {
		sc := c
		if sc.SpoolDir != "" {
			sc.SpoolDir = shardSpool(sc.SpoolDir, k)
		}
		if err := open(k, sc); err != nil {
			return nil, err
		}
	}
	if c.SpoolDir != "" {
		// The spools of shards this Producer does not write (a Producer of
		// more shards left them) are drained all the same: their records
		// name their streams.
		for _, dir := range shardSpools(c.SpoolDir) {
			var k int
			if _, err := fmt.Sscanf(filepath.Base(dir), "shard-%d", &k); err != nil || k < n {
				continue
			}
			sc := c
			sc.SpoolDir, sc.ProducerID = dir, ""
			if err := open(k, sc); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// sameLayout refuses a named producer whose earlier run, within the dedup
// window, wrote with another shard count or partition key: its events went
// to other shards, so this run would skip some it never wrote (counted per
// shard) and write others again.
func sameLayout(sp *streamProducer, layout string) error {
	if !sp.derivedIDs || sp.heldEvents == 0 || sp.heldLayout == layout {
		return nil
	}
	shards := func(l string) string {
		if l == "" {
			return "1 shard"
		}
		n, _, _ := strings.Cut(l, "/")
		return n + " shards"
	}
	return fmt.Errorf("%w: producer %q wrote %d event(s) to %s with %s (or another partition key), and now runs with %s: "+
		"re-run it with the shard count and partition key of its first run, or under another ProducerID "+
		"(its events would otherwise be skipped or written twice)",
		ErrInvalidConfig, sp.cfg.ProducerID, sp.heldEvents, sp.cfg.Stream, shards(sp.heldLayout), shards(layout))
}

// shardsRead refuses n shards for the trail whose shard 0 is stream when
// its processors read fewer (streambus.ShardsKey): the events of the
// others would wait unread. Nothing recorded (no sharded processor ran
// yet), or Redis not answering within timeout: no refusal.
func shardsRead(rdb redis.UniversalClient, stream string, n int, timeout time.Duration) error {
	if n < 2 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rec, err := streambus.RecordedShards(ctx, rdb, stream)
	if err != nil || rec == 0 || n <= rec {
		return nil
	}
	return fmt.Errorf("%w: Shards %d, but the processors of %s read %d shards (%s): start them with stream.shards %d first (docs/scaling.md), "+
		"else the events of the other shards wait unread", ErrInvalidConfig, n, stream, rec, streambus.ShardsKey(stream), n)
}

// shardSpool is the spool directory of shard k > 0 of a Producer whose
// spool is dir.
func shardSpool(dir string, k int) string { return filepath.Join(dir, fmt.Sprintf("shard-%d", k)) }

// Source returns the source id of the Producer's chain (of shard 0's, when
// sharded: each shard's chain is a session of its own).
func (p *Producer) Source() string { return p.shards[0].Source() }

// ID returns the producer's name in Redis (Config.ProducerID, or the random
// one chosen); shard k > 0 of a named producer is "<ID>/<k>".
func (p *Producer) ID() string { return p.shards[0].ID() }

// Send queues event (a struct, map, []byte, json.RawMessage or string, as
// for Bus.Audit) and returns at once; Pending gives its result. It blocks
// while Config.QueueSize events wait, until ctx ends (ErrQueueFull).
func (p *Producer) Send(ctx context.Context, event any) (Pending, error) {
	return p.SendWithID(ctx, event, "")
}

// SendWithID is Send giving the event_id to use when the event has none
// ("" lets the Producer choose: a UUIDv7, or, with Config.ProducerID set, an
// id derived from the producer and the sequence number, so that sending the
// same sequence again gives the same ids).
func (p *Producer) SendWithID(ctx context.Context, event any, eventID string) (Pending, error) {
	if p.n == 1 {
		return p.shards[0].SendWithID(ctx, event, eventID)
	}
	raw, err := encodeEvent(event)
	if err != nil {
		return Pending{}, err
	}
	k := shard.Of(raw, p.key, p.n, idSpread{raw, eventID, &p.spread})
	return p.shards[k].SendWithID(ctx, raw, eventID)
}

// idSpread places an event without a partition key by its event id when
// it has one (given, or in the event), so that sending it again after
// ErrOutcomeUnknown reaches the same stream, where it is deduplicated;
// else round-robin.
type idSpread struct {
	raw []byte
	id  string
	rr  *shard.Spread
}

func (s idSpread) Next(n int) int {
	if s.id != "" {
		return shard.ByText(s.id).Next(n)
	}
	return shard.Of(s.raw, "event_id", n, s.rr)
}

// Flush waits until every event sent before it has its result, or until ctx
// ends.
func (p *Producer) Flush(ctx context.Context) error {
	errs := make([]error, len(p.shards))
	var wg sync.WaitGroup
	for k, s := range p.shards {
		wg.Go(func() { errs[k] = s.Flush(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close flushes, stops the writer and releases the spool and the Redis
// client the Producer created. When ctx ends before every event has its
// result, what is still queued is spooled (with Config.SpoolDir) or
// resolved with ErrUnavailable (never sent) or ErrOutcomeUnknown (sent, no
// answer), and Close says how many.
func (p *Producer) Close(ctx context.Context) error {
	// The shards flush together, each with all of ctx's time; then they
	// close, shard 0 last: the others use its Redis client.
	if len(p.shards) > 1 {
		var wg sync.WaitGroup
		for _, s := range p.shards {
			wg.Go(func() { _ = s.Flush(ctx) })
		}
		wg.Wait()
	}
	var errs []error
	for k := len(p.shards) - 1; k >= 0; k-- {
		if err := p.shards[k].Close(ctx); err != nil {
			if k > 0 {
				err = fmt.Errorf("shard %d: %w", k, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stats returns the Producer's counters (summed over its shards): the
// spool's depth among them, for a service's metrics.
func (p *Producer) Stats() ProducerStats {
	var st ProducerStats
	for _, s := range p.shards {
		x := s.Stats()
		st.Queued += x.Queued
		st.Written += x.Written
		st.Duplicates += x.Duplicates
		st.Spooled += x.Spooled
		st.Failed += x.Failed
		st.SpoolEvents += x.SpoolEvents
		st.SpoolBytes += x.SpoolBytes
	}
	return st
}
