package streambus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// GroupReadArgs are the arguments of XReadGroup.
type GroupReadArgs struct {
	Stream   string
	Group    string
	Consumer string
	// ID: ">" (the default) delivers entries never delivered to the group;
	// any other id ("0" at start-up) re-reads this consumer's own pending
	// entries after it, and never blocks.
	ID string
	// Count caps the entries returned. Default: Config.Count.
	Count int64
	// Block is how long to wait for an entry when none is there: 0 means
	// Config.Block, a negative value means do not wait.
	Block time.Duration
	// Ack lists ids to acknowledge (XACK) in the same round trip, before the
	// read: the previous batch of a read loop. Batch.Acked reports the count.
	Ack []string
}

// XReadGroup reads for a consumer of a group and returns the verified
// entries. Entries that fail verification are logged as
// security_audit_tampered_message, counted, reported in Batch.Tampered and
// left pending: they are not acknowledged. Reading history (ID other than
// ">") also reports entries deleted while pending in Batch.Deleted and fills
// Deliveries from XPENDING.
func (b *Bus) XReadGroup(ctx context.Context, a GroupReadArgs) (Batch, error) {
	if a.Stream == "" || a.Group == "" || a.Consumer == "" {
		return Batch{}, fmt.Errorf("%w: xreadgroup needs stream, group and consumer", ErrInvalidArgs)
	}
	id, count, block := a.ID, b.count(a.Count), b.block(a.Block)
	if id == "" {
		id = ">"
	}
	history := id != ">"
	args := func(block time.Duration) *redis.XReadGroupArgs {
		return &redis.XReadGroupArgs{Group: a.Group, Consumer: a.Consumer, Streams: []string{a.Stream, id}, Count: count, Block: block}
	}
	batch := Batch{Cursor: id}

	// First round trip: the acks of the previous batch and a read that does
	// not wait, pipelined. Under load it is the only one, so its reply is
	// parsed lean (parseStreamsReply) rather than into go-redis's map per
	// entry. A read that waits goes through go-redis's XReadGroup, which
	// extends the connection's read timeout by the block time.
	if err := ctx.Err(); err != nil {
		return Batch{}, fmt.Errorf("xreadgroup from stream %q group %q consumer %q: %w", a.Stream, a.Group, a.Consumer, err)
	}
	// The first round trip does not wait, so it is short: it is not
	// abandoned half-way when ctx is cancelled (ctx's deadline still
	// bounds it), so that the acks it sent and the entries it delivered are
	// always reported rather than left in doubt.
	rt, cancel := roundTripContext(ctx)
	defer cancel()
	buf := &replyBuffer{b: make([]byte, 0, b.replySize(count))}
	read := redis.NewRawWriteToCmd(rt, buf, rawReadGroupArgs(a.Group, a.Consumer, count, a.Stream, id)...)
	read.SetFirstKeyPos(7)
	if len(a.Ack) > 0 {
		pipe := b.rdb.Pipeline()
		ack := pipe.XAck(rt, a.Stream, a.Group, a.Ack...)
		_ = pipe.Process(rt, read)
		_, _ = pipe.Exec(rt)
		if err := ack.Err(); err != nil {
			return Batch{}, fmt.Errorf("xack %d ids on stream %q group %q: %w", len(a.Ack), a.Stream, a.Group, err)
		}
		batch.Acked, batch.AcksSent = ack.Val(), true
		b.logAcked(ctx, a.Stream, a.Group, len(a.Ack), batch.Acked)
	} else {
		_ = b.rdb.Process(rt, read)
	}
	sc, _ := b.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{}
	}
	defer func() { sc.reset(); b.scratch.Put(sc) }()
	var entries []rawEntry
	err := read.Err()
	if err == nil {
		entries, err = parseStreamsReply(buf.b, sc)
		b.noteReplySize(count, len(entries), len(buf.b))
	}
	if err == nil && len(entries) == 0 && !history && block >= 0 {
		var msgs []redis.XStream
		msgs, err = b.blockLoop(ctx, block, func(block time.Duration) ([]redis.XStream, error) {
			return b.rdb.XReadGroup(ctx, args(block)).Result()
		})
		entries = streamEntries(msgs)
	}
	if err != nil {
		return batch, fmt.Errorf("xreadgroup from stream %q group %q consumer %q: %w", a.Stream, a.Group, a.Consumer, err)
	}

	deliveries := int64(1)
	if history {
		deliveries = 0
	}
	b.verify(a.Stream, entries, deliveries, history, &batch, sc)
	if history {
		if err := b.fillDeliveries(ctx, a.Stream, a.Group, a.Consumer, &batch); err != nil {
			return Batch{}, err
		}
	}
	b.reportTampered(ctx, "xreadgroup", a.Group, a.Consumer, batch.Tampered)
	if batch.Len() > 0 {
		b.log.LogAttrs(ctx, slog.LevelDebug, "consumer_messages_read",
			slog.String("stream", a.Stream), slog.String("group", a.Group), slog.String("consumer", a.Consumer),
			slog.String("id", id), slog.Int("count", len(batch.Entries)),
			slog.Int("tampered", len(batch.Tampered)), slog.Int("deleted", len(batch.Deleted)))
	}
	return batch, nil
}

// roundTripContext is ctx without its cancellation, with its deadline.
func roundTripContext(ctx context.Context) (context.Context, context.CancelFunc) {
	rt := context.WithoutCancel(ctx)
	if d, ok := ctx.Deadline(); ok {
		return context.WithDeadline(rt, d)
	}
	return rt, func() {}
}

// blockLoop runs read until it returns entries, block has elapsed or ctx is
// done. block < 0 reads once without waiting; otherwise each call blocks at
// most blockSlice, never zero (go-redis sends BLOCK 0, "forever", for it).
func (b *Bus) blockLoop(ctx context.Context, block time.Duration, read func(time.Duration) ([]redis.XStream, error)) ([]redis.XStream, error) {
	if block < 0 {
		msgs, err := read(-1)
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return msgs, err
	}
	deadline := time.Now().Add(block)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slice := min(time.Until(deadline), blockSlice)
		if slice <= 0 {
			return nil, nil
		}
		msgs, err := read(max(slice, time.Millisecond))
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
	}
}

// replySize is the buffer to allocate for a raw read of count entries:
// what the last full read took per entry, plus an eighth for larger
// events; 4 KiB before any read (it grows as needed).
func (b *Bus) replySize(count int64) int {
	per := b.replyBytesPerEntry.Load()
	if per == 0 {
		return 4 << 10
	}
	return int(per*count + per*count/8)
}

// noteReplySize remembers the size per entry of a reply that filled a read
// of count entries (a partial one says little about the next).
func (b *Bus) noteReplySize(count int64, entries, size int) {
	if int64(entries) == count {
		b.replyBytesPerEntry.Store(int64(size) / count)
	}
}

// rawReadGroupArgs are the arguments of an XREADGROUP that does not block.
// The stream is argument 7 (its first key position, for Redis Cluster).
func rawReadGroupArgs(group, consumer string, count int64, stream, id string) []any {
	return []any{"xreadgroup", "group", group, consumer, "count", count, "streams", stream, id}
}

// streamEntries are the entries of go-redis's parsed stream reply.
func streamEntries(streams []redis.XStream) []rawEntry {
	var out []rawEntry
	for _, s := range streams {
		out = append(out, messageEntries(s.Messages)...)
	}
	return out
}

// verify sorts the entries of a single-stream reply into batch, advancing
// batch.Cursor. history marks a reply that may hold deleted entries.
// sc provides the verdicts' slice.
func (b *Bus) verify(stream string, entries []rawEntry, deliveries int64, history bool, batch *Batch, sc *scratch) {
	verdicts := b.verifyAll(stream, entries, slices.Grow(sc.verdicts[:0], len(entries))[:len(entries)])
	sc.verdicts = verdicts
	if batch.Entries == nil {
		batch.Entries = make([]Entry, 0, len(entries))
	}
	for i, m := range entries {
		batch.Cursor = m.id
		if m.deleted && history {
			batch.Deleted = append(batch.Deleted, m.id)
			continue
		}
		env, err := verdicts[i].env, verdicts[i].err
		if err != nil {
			batch.Tampered = append(batch.Tampered, Tampered{
				ID: m.id, Stream: stream, Reason: integrity.Reason(err), Err: err,
				Deliveries: deliveries, Fields: fieldMap(m.fields),
			})
			continue
		}
		batch.Entries = append(batch.Entries, Entry{
			ID: m.id, Stream: stream, KeyID: env.KeyID, EventID: env.EventID,
			Event: env.Event, Sig: env.Sig, Deliveries: deliveries,
		})
	}
}

type verdict struct {
	env integrity.Envelope
	err error
}

// parallelChunk is the smallest share of a batch worth a goroutine: a
// batch of 256 (the processor's default) or more is verified on every core
// while Redis, in a read loop, waits for the next request anyway.
const parallelChunk = 128

// verifyAll verifies entries into out (of the same length).
func (b *Bus) verifyAll(stream string, entries []rawEntry, out []verdict) []verdict {
	verify := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i].env, out[i].err = b.keys.VerifyFields(stream, entries[i].fields)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(entries)/parallelChunk)
	if workers < 2 {
		verify(0, len(entries))
		return out
	}
	var wg sync.WaitGroup
	size := (len(entries) + workers - 1) / workers
	for lo := 0; lo < len(entries); lo += size {
		wg.Go(func() { verify(lo, min(lo+size, len(entries))) })
	}
	wg.Wait()
	return out
}

// reportTampered logs and counts entries that failed verification.
func (b *Bus) reportTampered(ctx context.Context, op, group, consumer string, ts []Tampered) {
	if len(ts) == 0 {
		return
	}
	b.mu.Lock()
	for _, t := range ts {
		b.tampered[t.Reason]++
	}
	b.mu.Unlock()
	for _, t := range ts {
		b.log.LogAttrs(ctx, slog.LevelWarn, "security_audit_tampered_message",
			slog.String("entry_id", t.ID), slog.String("stream", t.Stream),
			slog.String("reason", t.Reason), slog.String("error", t.Err.Error()),
			slog.String("op", op), slog.String("group", group), slog.String("consumer", consumer),
			slog.Int64("deliveries", t.Deliveries))
	}
}

func (b *Bus) count(n int64) int64 {
	if n <= 0 {
		return b.cfg.Count
	}
	return n
}

func (b *Bus) block(d time.Duration) time.Duration {
	if d == 0 {
		return b.cfg.Block
	}
	return d
}
