package processor

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/streambus"
)

// feeder hands entries to the workers. Sends use the work context, so that
// entries already read are still processed during a graceful shutdown.
type feeder struct {
	jobs        chan<- []streambus.Entry
	uncommitted *atomic.Int64
	held        *heldSet
	sendCtx     context.Context
	workers     int
}

// maxChunk bounds the entries a worker takes at once: large enough that a
// channel operation is amortised over many entries, small enough that a
// batch is shared between the workers and its first results are committed
// early.
const maxChunk = 32

// send hands held entries (triage took them) to the workers in chunks;
// they are uncommitted from here on. It returns false when the work
// context ended first: the entries not sent are let go, pending in Redis.
func (f feeder) send(entries []streambus.Entry) bool {
	chunk := min(maxChunk, max(1, (len(entries)+f.workers-1)/f.workers))
	for lo := 0; lo < len(entries); lo += chunk {
		c := entries[lo:min(lo+chunk, len(entries))]
		f.uncommitted.Add(int64(len(c)))
		select {
		case f.jobs <- c:
		case <-f.sendCtx.Done():
			f.uncommitted.Add(-int64(len(c)))
			f.held.remove(entries[lo:])
			return false // left pending: redelivered after a restart or reclaimed
		}
	}
	return true
}

// readLoop first re-reads this consumer's own pending entries (a previous
// run under the same name stopped before acking them), then reads new ones
// with readers reads in flight until ctx ends.
func (p *Processor) readLoop(ctx context.Context, feed feeder, stop context.CancelFunc) {
	cursor := "0"
	for ctx.Err() == nil {
		batch, ok := p.read(ctx, cursor, nil)
		if !ok {
			return
		}
		if batch.Len() == 0 {
			break
		}
		if !feed.send(p.triage(ctx, batch, true)) {
			return
		}
		cursor = batch.Cursor
	}
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() { p.readNew(ctx, feed, stop) })
	}
	wg.Wait()
}

// readers is how many reads of new entries are in flight at once: while
// this process verifies and hands on one batch, Redis prepares the next
// instead of waiting for the request (a single read loop leaves Redis and
// the reader idle in turn). Entries of two batches reach the workers
// interleaved; their order was never kept past the workers anyway.
const readers = 2

// readNew reads entries never delivered to the group, sending the queued
// acks with each read, until ctx ends or (StopWhenIdle) the stream is
// drained.
func (p *Processor) readNew(ctx context.Context, feed feeder, stop context.CancelFunc) {
	for ctx.Err() == nil {
		acks := p.acks.take()
		batch, ok := p.read(ctx, ">", &acks)
		if !ok {
			p.acks.put(acks) // any not sent: for the committer to send
			return
		}
		if batch.Len() == 0 {
			if p.cfg.StopWhenIdle && feed.uncommitted.Load() == 0 && p.drained(ctx) {
				p.log.Info("stream_drained", slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group))
				stop()
				return
			}
			continue
		}
		if !feed.send(p.triage(ctx, batch, false)) {
			return
		}
	}
}

// read reads one batch, acknowledging acks (if not nil) in the same round
// trip, retrying through Redis outages and recreating a deleted stream or
// group. Acks that went through are accounted for and cleared from acks,
// also when the read then failed. ok is false once ctx ended.
func (p *Processor) read(ctx context.Context, id string, acks *pendingAcks) (streambus.Batch, bool) {
	var batch streambus.Batch
	var replayed []string
	defer func() { p.replayedAcks(ctx, replayed) }()
	err := p.retryRedis(ctx, "xreadgroup", func() error {
		// Every read has a deadline of its own, whatever the client and
		// the network do: a read stuck on a dead connection fails and is
		// retried on a fresh one.
		rctx, cancel := context.WithTimeout(ctx, p.cfg.Block+readGrace)
		defer cancel()
		// A read that sends acks does not wait: they are accounted for
		// when it returns, and an idle stream would hold that up.
		block := p.cfg.Block
		if len(acks.list()) > 0 {
			block = -1
		}
		var err error
		batch, err = p.bus.XReadGroup(rctx, streambus.GroupReadArgs{
			Stream: p.cfg.Stream, Group: p.cfg.Group, Consumer: p.cfg.Consumer,
			ID: id, Count: int64(p.cfg.BatchSize), Block: block, Ack: acks.list(), AckMarks: acks.markList(),
		})
		if batch.AcksSent {
			p.acked(*acks, batch.Acked)
			p.gaps.observe(batch.AckMarks)
			replayed = append(replayed, batch.AckReplayed...)
			*acks = pendingAcks{}
		}
		now := time.Now()
		p.lastRead.Store(now.UnixNano())
		if err == nil {
			p.lastOK.Store(now.UnixNano())
			if p.shards != nil {
				p.shards.publishLastRead()
			} else {
				p.metrics.LastRead.Set(float64(now.UnixNano()) / 1e9)
			}
		}
		if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
			p.recreateGroup(ctx)
		}
		return err
	})
	return batch, err == nil
}

// recreateGroup answers NOGROUP: someone deleted the stream or the group.
// That is an integrity alarm (pending entries were lost with the group);
// the group is created again so processing goes on.
func (p *Processor) recreateGroup(ctx context.Context) {
	created, err := p.bus.XGroupCreate(ctx, p.cfg.Stream, p.cfg.Group, "0")
	if err == nil && created {
		p.log.Error("consumer_group_recreated",
			slog.String("stream", p.cfg.Stream), slog.String("group", p.cfg.Group),
			slog.String("detail", "the stream or the consumer group was deleted while auditproc ran; entries pending at that moment are unaccounted for"))
		p.outcomes.groupRecreated()
	}
}

// drained reports whether nothing is pending for the group.
func (p *Processor) drained(ctx context.Context) bool {
	info, err := p.bus.XPending(ctx, p.cfg.Stream, p.cfg.Group)
	return err == nil && info.Count == 0
}
