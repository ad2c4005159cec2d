package streambus_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// chained returns a batch of source src: entries first..first+len(kinds)-1
// of the producer's sequence and of the chain, the first of them event
// number firstEvent. Events and sigs name their sequence number, so that
// a test can tell which entry Redis holds.
func chained(stream, src string, first, firstEvent uint64, kinds ...string) *streambus.AppendBatch {
	b := &streambus.AppendBatch{Stream: stream, Producer: "p", FirstSeq: first, KeyID: "k1",
		Source: src, ChainSeq: first, Prev: sigOf(src, first-1), Kinds: kinds, FirstEvent: firstEvent}
	for i := range kinds {
		seq := first + uint64(i)
		b.Events = append(b.Events, fmt.Appendf(nil, `{"seq":%d,"src":%q}`, seq, src))
		b.Sigs = append(b.Sigs, []byte(sigOf(src, seq)))
		b.EventIDs = append(b.EventIDs, fmt.Sprintf("%s-%d", src, seq))
	}
	return b
}

func sigOf(src string, seq uint64) string { return fmt.Sprintf("%s-sig-%d", src, seq) }

func events(n int) []string {
	kinds := make([]string, n)
	for i := range kinds {
		kinds[i] = integrity.KindEvent
	}
	return kinds
}

// appendOK appends batches and fails the test on any error.
func appendOK(t *testing.T, bus *streambus.Bus, batches ...*streambus.AppendBatch) []streambus.AppendResult {
	t.Helper()
	res, err := bus.AppendBatches(context.Background(), batches, 0, time.Minute)
	require.NoError(t, err)
	for i, r := range res {
		require.NoError(t, r.Err, "batch %d", i)
	}
	return res
}

// entries returns the stream's entries' field maps, in stream order.
func entries(t *testing.T, rdb *redis.Client, stream string) []map[string]any {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(t, err)
	out := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		out[i] = m.Values
	}
	return out
}

// seqs returns the seq field of every entry.
func seqs(t *testing.T, rdb *redis.Client, stream string) []int {
	t.Helper()
	var out []int
	for _, e := range entries(t, rdb, stream) {
		n, err := strconv.Atoi(e["seq"].(string))
		require.NoError(t, err)
		out = append(out, n)
	}
	return out
}

// TestAppendBatchesOnceAndInOrder: a batch is written once however often
// it is sent, an overlapping one adds only what is new, with each entry's
// prev the sig of the one before it; a batch beyond the next sequence
// number is refused whole, also after earlier batches of the same call
// were written.
func TestAppendBatchesOnceAndInOrder(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	s := f.stream

	res := appendOK(t, f.bus, chained(s, "a/1", 1, 1, events(3)...))
	assert.Zero(t, res[0].Skipped)
	assert.Len(t, res[0].IDs, 3)
	es := entries(t, f.rdb, s)
	require.Len(t, es, 3)
	assert.Equal(t, map[string]any{"v": "2", "kid": "k1", "src": "a/1", "seq": "1", "prev": sigOf("a/1", 0), "kind": "event",
		"event": `{"seq":1,"src":"a/1"}`, "sig": sigOf("a/1", 1)}, es[0])
	assert.Equal(t, sigOf("a/1", 2), es[2]["prev"])
	key := streambus.ProducerKey(s, "p")
	assert.Equal(t, "a/1 3 3", f.rdb.Get(ctx, key).Val())
	ttl := f.rdb.PTTL(ctx, key).Val()
	assert.True(t, ttl > 0 && ttl <= time.Minute, "the key lasts the window: %s", ttl)

	res = appendOK(t, f.bus, chained(s, "a/1", 1, 1, events(3)...))
	assert.Equal(t, 3, res[0].Skipped, "a resent batch")
	assert.Empty(t, res[0].IDs)

	res = appendOK(t, f.bus, chained(s, "a/1", 2, 2, events(4)...))
	assert.Equal(t, 2, res[0].Skipped, "an overlapping batch")
	assert.Len(t, res[0].IDs, 2)
	es = entries(t, f.rdb, s)
	assert.Equal(t, sigOf("a/1", 3), es[3]["prev"], "prev across the skipped part")
	assert.Equal(t, []int{1, 2, 3, 4, 5}, seqs(t, f.rdb, s))

	res, err := f.bus.AppendBatches(ctx, []*streambus.AppendBatch{
		chained(s, "a/1", 6, 6, events(2)...),
		chained(s, "a/1", 8, 8, events(2)...),
		chained(s, "a/1", 11, 11, events(1)...),
		chained(s, "a/1", 10, 10, events(1)...),
	}, 0, time.Minute)
	require.NoError(t, err)
	require.Len(t, res, 4)
	assert.NoError(t, res[0].Err)
	assert.NoError(t, res[1].Err)
	assert.ErrorIs(t, res[2].Err, streambus.ErrSeqGap)
	assert.Empty(t, res[2].IDs)
	assert.NoError(t, res[3].Err, "the next batch after a refused one")
	assert.Equal(t, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, seqs(t, f.rdb, s))
	assert.Equal(t, "a/1 10 10", f.rdb.Get(ctx, key).Val())
}

// TestAppendBatchesRerunSkipsHeldEvents: a batch of another source (a new
// session of the same named producer, re-running a file) skips its leading
// events numbered at or below the events Redis holds, checkpoints not
// counted, and carries on from there.
func TestAppendBatchesRerunSkipsHeldEvents(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	s := f.stream
	cp := integrity.KindCheckpoint
	appendOK(t, f.bus, chained(s, "a/1", 1, 1, "event", "event", cp, "event", "event"))
	key := streambus.ProducerKey(s, "p")
	assert.Equal(t, "a/1 5 4", f.rdb.Get(ctx, key).Val(), "5 entries, 4 events")

	res := appendOK(t, f.bus, chained(s, "b/1", 1, 1, events(6)...))
	assert.Equal(t, 4, res[0].Skipped, "the 4 events Redis holds")
	assert.Len(t, res[0].IDs, 2)
	es := entries(t, f.rdb, s)
	require.Len(t, es, 7)
	assert.Equal(t, []any{"event", "event", "checkpoint", "event", "event", "event", "event"},
		[]any{es[0]["kind"], es[1]["kind"], es[2]["kind"], es[3]["kind"], es[4]["kind"], es[5]["kind"], es[6]["kind"]})
	assert.Equal(t, "b/1", es[5]["src"])
	assert.Equal(t, "5", es[5]["seq"])
	assert.Equal(t, sigOf("b/1", 4), es[5]["prev"])
	assert.Equal(t, "b/1 6 6", f.rdb.Get(ctx, key).Val())

	// A third session whose events are all held writes nothing and keeps
	// the count.
	res = appendOK(t, f.bus, chained(s, "c/1", 1, 1, events(3)...))
	assert.Equal(t, 3, res[0].Skipped)
	assert.Len(t, entries(t, f.rdb, s), 7)
	assert.Equal(t, "b/1 6 6", f.rdb.Get(ctx, key).Val())
}

// TestAppendBatchesChainSeqs: every entry's seq is its batch's chain seq
// plus its position, exactly, also beyond 2^53 (where a Lua number would
// round); a kind other than event or checkpoint is refused before
// anything is sent.
func TestAppendBatchesChainSeqs(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	s := f.stream
	b := chained(s, "a/1", 1, 1, events(3)...)
	b.ChainSeq = 1<<60 + 7
	appendOK(t, f.bus, b)
	es := entries(t, f.rdb, s)
	require.Len(t, es, 3)
	for i, e := range es {
		assert.Equal(t, strconv.FormatUint(1<<60+7+uint64(i), 10), e["seq"], "entry %d", i)
	}

	bad := chained(s, "a/1", 4, 4, "event", "Checkpoint")
	_, err := f.bus.AppendBatches(context.Background(), []*streambus.AppendBatch{bad}, 0, time.Minute)
	assert.ErrorIs(t, err, streambus.ErrInvalidArgs)
	assert.ErrorContains(t, err, `entry 1's kind "Checkpoint"`)
	assert.Len(t, entries(t, f.rdb, s), 3, "nothing written")
}

// TestAppendBatchesKeyForms: a producer key holding a bare number (written
// by an earlier version) counts as this source's last sequence number;
// version 1 batches (no source) are written as envelope version 1; the
// shard layout is kept, and a batch without one keeps the recorded one.
func TestAppendBatchesKeyForms(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	s := f.stream
	key := streambus.ProducerKey(s, "p")
	require.NoError(t, f.rdb.Set(ctx, key, "2", time.Minute).Err())
	res := appendOK(t, f.bus, chained(s, "a/1", 1, 1, events(4)...))
	assert.Equal(t, 2, res[0].Skipped)
	assert.Equal(t, "a/1 4 4", f.rdb.Get(ctx, key).Val())

	v1 := uniqueName(t, "v1")
	b := &streambus.AppendBatch{Stream: v1, Producer: "p", FirstSeq: 1, KeyID: "k1",
		Events: [][]byte{[]byte(`{"a":1}`), []byte(`{"a":2}`)}, Sigs: [][]byte{[]byte("s1"), []byte("s2")}, EventIDs: []string{"e1", "e2"}}
	res = appendOK(t, f.bus, b)
	assert.Len(t, res[0].IDs, 2)
	assert.Equal(t, map[string]any{"v": "1", "kid": "k1", "event": `{"a":1}`, "sig": "s1"}, entries(t, f.rdb, v1)[0])
	assert.Equal(t, "- 2 2", f.rdb.Get(ctx, streambus.ProducerKey(v1, "p")).Val())
	res = appendOK(t, f.bus, b)
	assert.Equal(t, 2, res[0].Skipped, "a version 1 batch resent")

	lay := uniqueName(t, "layout")
	b1 := chained(lay, "a/1", 1, 1, events(2)...)
	b1.Layout = "3.crc32.actor"
	appendOK(t, f.bus, b1)
	assert.Equal(t, "a/1 2 2 3.crc32.actor", f.rdb.Get(ctx, streambus.ProducerKey(lay, "p")).Val())
	appendOK(t, f.bus, chained(lay, "a/1", 3, 3, events(1)...))
	assert.Equal(t, "a/1 3 3 3.crc32.actor", f.rdb.Get(ctx, streambus.ProducerKey(lay, "p")).Val(), "the recorded layout is kept")
}

// TestAppendBatchesMaxLen: with a maxlen the stream is trimmed as it grows.
func TestAppendBatchesMaxLen(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	for first := uint64(1); first <= 1000; first += 250 {
		res, err := f.bus.AppendBatches(ctx, []*streambus.AppendBatch{chained(f.stream, "a/1", first, first, events(250)...)}, 10, time.Minute)
		require.NoError(t, err)
		require.NoError(t, res[0].Err)
	}
	n := f.rdb.XLen(ctx, f.stream).Val()
	assert.Less(t, n, int64(1000), "trimmed (MAXLEN ~ trims whole nodes)")
}

// TestAppendBatchesWrongType: a stream key that holds another type refuses
// the batch with a Redis error; nothing is recorded as written.
func TestAppendBatchesWrongType(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	require.NoError(t, f.rdb.Set(ctx, f.stream, "not a stream", 0).Err())
	res, err := f.bus.AppendBatches(ctx, []*streambus.AppendBatch{chained(f.stream, "a/1", 1, 1, events(3)...)}, 0, time.Minute)
	if err == nil {
		err = res[0].Err
		assert.Empty(t, res[0].IDs)
	}
	require.Error(t, err)
	assert.True(t, streambus.IsRedisError(err), "refused by Redis: %v", err)
	assert.Contains(t, err.Error(), "WRONGTYPE")
	assert.Zero(t, f.rdb.Exists(ctx, streambus.ProducerKey(f.stream, "p")).Val(), "no sequence recorded")
}

// TestAppendBatchesConcurrentSenders: several senders of the same
// producer's batches at once (a resend racing the first send, or the same
// file emitted twice at the same time) store each entry once, in order.
func TestAppendBatchesConcurrentSenders(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	const senders, batches, size = 4, 40, 25
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rdb := redistest.Shared(t).Client(t)
			bus, err := streambus.New(streambus.Config{}, nil, rdb, f.keys)
			if !assert.NoError(t, err) {
				return
			}
			for i := range batches {
				first := uint64(i*size + 1)
				res, err := bus.AppendBatches(context.Background(), []*streambus.AppendBatch{chained(f.stream, "a/1", first, first, events(size)...)}, 0, time.Minute)
				if assert.NoError(t, err) {
					assert.NoError(t, res[0].Err)
				}
			}
		}()
	}
	wg.Wait()
	got := seqs(t, f.rdb, f.stream)
	want := make([]int, batches*size)
	for i := range want {
		want[i] = i + 1
	}
	assert.Equal(t, want, got)
}
