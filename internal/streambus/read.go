package streambus

import (
	"context"
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
	// AckMarks, when not nil, holds the Mark of each id of Ack (Source ""
	// for a version 1 entry). With any chained one, the acks go through the
	// commit script instead of XACK, still in the same round trip: the
	// marks are recorded with the acks, a replay is refused
	// (Batch.AckReplayed) and Batch.AckMarks says where the sources stand.
	AckMarks []Mark
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
	batch := Batch{Cursor: id}

	// First round trip: the acks of the previous batch and a read that does
	// not wait, pipelined. Under load it is the only one. Every reply, this
	// one and those of a read that waits, is parsed from its raw bytes
	// (parseStreamsReply) rather than into go-redis's map per entry: the
	// map would cost allocations and, worse, hide a field named twice.
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
	if b.waits() && len(a.Ack) > 0 {
		// Acks that wait for replicas go first, in a round trip of their
		// own: a read behind a WAIT that fell short would deliver entries
		// only to report an error. Acks not confirmed fail the read before
		// anything is delivered, and are sent again (a rerun acknowledges
		// nothing twice).
		items := markedAcks(a.Ack, a.AckMarks)
		if items == nil {
			items = plainAcks(a.Ack)
		}
		out, err := b.runCommit(rt, a.Stream, a.Group, items)
		if err != nil {
			return Batch{}, fmt.Errorf("ack %d ids on stream %q group %q: %w", len(a.Ack), a.Stream, a.Group, err)
		}
		batch.Acked, batch.AcksSent, batch.AckMarks = out.acked, true, out.marks
		for _, i := range out.replayed {
			batch.AckReplayed = append(batch.AckReplayed, items[i].id)
		}
		b.logAcked(ctx, a.Stream, a.Group, len(a.Ack), batch.Acked)
		_ = b.rdb.Process(rt, read)
	} else if items := markedAcks(a.Ack, a.AckMarks); items != nil {
		keys, argv := commitArgs(a.Stream, a.Group, items, "")
		pipe := b.rdb.Pipeline()
		ack := commitScript.EvalSha(rt, pipe, keys, argv...)
		_ = pipe.Process(rt, read)
		_, _ = pipe.Exec(rt)
		res, err := ack.Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The script is not loaded yet (or Redis restarted): once more,
			// on its own.
			res, err = commitScript.Run(rt, b.rdb, keys, argv...).Slice()
		}
		if err != nil {
			return Batch{}, fmt.Errorf("ack %d chained ids on stream %q group %q: %w", len(a.Ack), a.Stream, a.Group, err)
		}
		out := parseCommit(res, items)
		batch.Acked, batch.AcksSent, batch.AckMarks = out.acked, true, out.marks
		for _, i := range out.replayed {
			batch.AckReplayed = append(batch.AckReplayed, items[i].id)
		}
		b.logAcked(ctx, a.Stream, a.Group, len(a.Ack), batch.Acked)
	} else if len(a.Ack) > 0 {
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
	sc := b.getScratch()
	defer b.putScratch(sc)
	var entries []rawEntry
	err := read.Err()
	if err == nil {
		entries, err = parseStreamsReply(buf.b, sc)
		b.noteReplySize(count, len(entries), len(buf.b))
	}
	if err == nil && len(entries) == 0 && !history && block >= 0 {
		entries, err = b.blockLoop(ctx, block, func(block time.Duration) ([]rawEntry, error) {
			return b.rawStreams(ctx, sc, 9, "xreadgroup", "group", a.Group, a.Consumer, "count", count,
				"block", block.Milliseconds(), "streams", a.Stream, id)
		})
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
// most b.slice, never zero (Redis reads BLOCK 0 as "forever").
func (b *Bus) blockLoop(ctx context.Context, block time.Duration, read func(time.Duration) ([]rawEntry, error)) ([]rawEntry, error) {
	if block < 0 {
		return read(-1)
	}
	deadline := time.Now().Add(block)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slice := min(time.Until(deadline), b.slice)
		if slice <= 0 {
			return nil, nil
		}
		entries, err := read(max(slice, time.Millisecond))
		if err != nil || len(entries) > 0 {
			return entries, err
		}
	}
}

// rawStreams sends an XREAD or XREADGROUP (args, the stream name at
// position keyPos for Redis Cluster) and parses its raw reply into sc. A
// blocking read's BLOCK must stay within the client's read timeout (b.slice
// sees to it): a raw command does not extend it as go-redis's XRead does.
func (b *Bus) rawStreams(ctx context.Context, sc *scratch, keyPos int, args ...any) ([]rawEntry, error) {
	buf := &replyBuffer{b: make([]byte, 0, 512)} // handed-out entries point into it: never reused
	cmd := redis.NewRawWriteToCmd(ctx, buf, args...)
	cmd.SetFirstKeyPos(int8(keyPos))
	_ = b.rdb.Process(ctx, cmd)
	if err := cmd.Err(); err != nil {
		return nil, err
	}
	return parseStreamsReply(buf.b, sc)
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
		if err == nil && b.cfg.RequireChain && !env.Chained() {
			err = errUnchained
		}
		if err != nil {
			batch.Tampered = append(batch.Tampered, Tampered{
				ID: m.id, Stream: stream, Reason: integrity.Reason(err), Err: err,
				Deliveries: deliveries, Fields: ownFields(m.fields),
			})
			continue
		}
		e := Entry{
			ID: m.id, Stream: stream, KeyID: env.KeyID, EventID: env.EventID,
			Event: env.Event, Sig: env.Sig, Deliveries: deliveries, Link: env.Link,
		}
		if env.IsCheckpoint() {
			batch.Checkpoints = append(batch.Checkpoints, e)
			continue
		}
		batch.Entries = append(batch.Entries, e)
	}
}

// errUnchained refuses a version 1 entry under Config.RequireChain.
var errUnchained = &integrity.EnvelopeError{Field: integrity.FieldVersion,
	Problem: "envelope version 1 (no chain) refused: integrity.require_chain is set", Err: integrity.ErrMalformed}

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

func (b *Bus) getScratch() *scratch {
	sc, _ := b.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{}
	}
	return sc
}

func (b *Bus) putScratch(sc *scratch) {
	sc.reset()
	b.scratch.Put(sc)
}

// raw sends a command whose first key is its argument 1 and returns its
// raw reply, in a buffer of its own (parsed entries point into it).
func (b *Bus) raw(ctx context.Context, args ...any) ([]byte, error) {
	return b.rawSized(ctx, 512, args...)
}

// rawSized is raw with a reply buffer of size bytes to start with (it
// grows by doubling: a good guess saves copies of large replies).
func (b *Bus) rawSized(ctx context.Context, size int, args ...any) ([]byte, error) {
	buf := &replyBuffer{b: make([]byte, 0, size)}
	cmd := redis.NewRawWriteToCmd(ctx, buf, args...)
	cmd.SetFirstKeyPos(1)
	_ = b.rdb.Process(ctx, cmd)
	return buf.b, cmd.Err()
}

// RawEntry is a stream entry as stored: its id and its fields as the flat
// name/value list Redis sends, in stream order, a field named twice
// included. Fields share the memory of the reply they came from.
type RawEntry struct {
	ID     string
	Fields []string
}

// XRange returns up to count entries of stream from start to end
// (inclusive ids, or "-" and "+"; "(" before an id excludes it), unverified,
// with their fields as stored. count <= 0 means Config.Count. It only
// reads; a missing stream has no entries.
func (b *Bus) XRange(ctx context.Context, stream, start, end string, count int64) ([]RawEntry, error) {
	if stream == "" {
		return nil, fmt.Errorf("%w: empty stream name", ErrInvalidArgs)
	}
	return b.xrange(ctx, "xrange", stream, start, end, count)
}

// XRevRange is XRange newest first, from end down to start.
func (b *Bus) XRevRange(ctx context.Context, stream, end, start string, count int64) ([]RawEntry, error) {
	if stream == "" {
		return nil, fmt.Errorf("%w: empty stream name", ErrInvalidArgs)
	}
	return b.xrange(ctx, "xrevrange", stream, end, start, count)
}

func (b *Bus) xrange(ctx context.Context, cmd, stream, start, end string, count int64) ([]RawEntry, error) {
	count = b.count(count)
	raw, err := b.rawSized(ctx, b.replySize(count), cmd, stream, start, end, "count", count)
	if err != nil {
		return nil, fmt.Errorf("%s %s %s on stream %q: %w", cmd, start, end, stream, err)
	}
	var sc scratch
	entries, err := parseEntriesReply(raw, &sc)
	if err == nil {
		b.noteReplySize(count, len(entries), len(raw))
	}
	if err != nil {
		return nil, fmt.Errorf("xrange %s %s on stream %q: %w", start, end, stream, err)
	}
	out := make([]RawEntry, len(entries))
	for i, e := range entries {
		out[i] = RawEntry{ID: e.id, Fields: e.fields}
	}
	return out, nil
}

// VerifyRaw verifies a raw entry read from stream, as every read of the Bus
// does (a field named twice included).
func (b *Bus) VerifyRaw(stream string, e RawEntry) (integrity.Envelope, error) {
	return b.keys.VerifyFields(stream, e.Fields)
}

// plainAcks are the commit items of acks without marks.
func plainAcks(ids []string) []scriptItem {
	items := make([]scriptItem, len(ids))
	for i, id := range ids {
		items[i] = scriptItem{id: id}
	}
	return items
}

// markedAcks are the commit items of acks with their marks, nil when none
// of them is chained (a plain XACK does).
func markedAcks(ids []string, marks []Mark) []scriptItem {
	if len(marks) != len(ids) {
		return nil
	}
	chained := false
	for _, m := range marks {
		if m.Source != "" {
			chained = true
			break
		}
	}
	if !chained {
		return nil
	}
	items := make([]scriptItem, len(ids))
	for i, id := range ids {
		items[i] = scriptItem{id: id, mark: marks[i], strict: true}
		if marks[i].Source == "" {
			items[i].mark = Mark{}
		}
	}
	return items
}
