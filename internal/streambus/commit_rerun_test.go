package streambus

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
)

// TestCommitRunTwiceVoidsNothingWritten: the same commit request run twice
// (go-redis retries a command whose reply was lost; a request can arrive
// late) answers the second time what the first appended, so the writer
// voids only what is not in the stream: an emit appended by the first run
// gets no void, one skipped by it gets one, and the chain verifies whole.
func TestCommitRunTwiceVoidsNothingWritten(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	ctx := context.Background()
	stream, ids := delivered(t, rdb, "rerun", 2)
	out := stream + ":out"
	require.NoError(t, rdb.XAck(ctx, stream, "g", ids[1]).Err()) // finished elsewhere

	b := chainedBus(t, rdb)
	var items []scriptItem
	for _, id := range ids {
		add, err := b.signAdd(Add{Stream: out, Event: []byte(`{"action":"copy"}`)})
		require.NoError(t, err)
		items = append(items, scriptItem{id: id, adds: []scriptAdd{add}})
	}
	first, err := b.runCommit(ctx, stream, "g", items)
	require.NoError(t, err)
	assert.NotNil(t, first.ids[0])
	assert.Nil(t, first.ids[1])
	again, err := b.runCommit(ctx, stream, "g", items)
	require.NoError(t, err)
	assert.NotNil(t, again.ids[0], "appended by the first run: not to be voided")
	assert.Nil(t, again.ids[1])
	b.voidSkipped(ctx, items, again.ids)
	require.NoError(t, b.CloseChain(ctx))

	n, err := rdb.XLen(ctx, out).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 3, n, "one emit, one void, the closing checkpoint")
	ttl, err := rdb.PTTL(ctx, CommitKey(stream, items[0].adds[0].env.Sig)).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Duration(0), "the commit key expires")
}

// TestLinkWrittenOnce: a checkpoint or sealed record's append run twice
// (a client retry) writes it once.
func TestLinkWrittenOnce(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	ctx := context.Background()
	stream := fmt.Sprintf("test:link:%d", time.Now().UnixNano())
	sig := fmt.Sprintf("%064x", time.Now().UnixNano())
	keys, argv := linkArgs(stream, sig, []any{"a", "1"})
	id, err := linkScript.Run(ctx, rdb, keys, argv...).Text()
	require.NoError(t, err)
	assert.NotEmpty(t, id)
	_, err = linkScript.Run(ctx, rdb, keys, argv...).Text()
	assert.ErrorIs(t, err, redis.Nil, "the second run appends nothing")
	n, err := rdb.XLen(ctx, stream).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 1, n)
}

// chainedBus is a Bus with a chain, on rdb, with a fresh key.
func chainedBus(t *testing.T, rdb redis.UniversalClient) *Bus {
	t.Helper()
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("k1", map[string][]byte{"k1": key})
	require.NoError(t, err)
	b, err := New(Config{Source: "run.c"}, slog.New(slog.DiscardHandler), rdb, keys)
	require.NoError(t, err)
	return b
}

// delivered appends n entries to a new stream named after what, reads
// them as consumer "c" of group "g", and returns the stream and the ids.
func delivered(t *testing.T, rdb redis.UniversalClient, what string, n int) (string, []string) {
	t.Helper()
	ctx := context.Background()
	stream := fmt.Sprintf("{ct}:%s:%d", what, time.Now().UnixNano())
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "$").Err())
	ids := make([]string, n)
	for i := range n {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", i}}).Result()
		require.NoError(t, err)
		ids[i] = id
	}
	require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: int64(n)}).Err())
	return stream, ids
}

// TestCommitRerunKeepsReplays: a commit run twice answers the second time
// what the first did, the items it refused as replays included (still
// pending, to be dead-lettered).
func TestCommitRerunKeepsReplays(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	ctx := context.Background()
	stream, ids := delivered(t, rdb, "rr", 2)
	out := stream + ":out"
	b := chainedBus(t, rdb)
	var items []scriptItem
	for _, id := range ids {
		add, err := b.signAdd(Add{Stream: out, Event: []byte(`{"action":"copy"}`)})
		require.NoError(t, err)
		// both entries claim (src, 1): the second is a replay
		items = append(items, scriptItem{id: id, strict: true, mark: Mark{ID: id, Source: "prod/1", Seq: 1}, adds: []scriptAdd{add}})
	}
	first, err := b.runCommit(ctx, stream, "g", items)
	require.NoError(t, err)
	again, err := b.runCommit(ctx, stream, "g", items)
	require.NoError(t, err)
	assert.Equal(t, first.replayed, again.replayed, "a rerun should report the same replays")
	pend, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 10}).Result()
	require.NoError(t, err)
	assert.Len(t, pend, 1, "the replay stays pending")
}

// TestCheckpointPipelineReportsEachFailure: a pipeline of checkpoints whose
// first was written by an earlier try and whose second fails is a failure
// (the chain restarts); a link whose XADD failed is not taken as written
// when it is tried again.
func TestCheckpointPipelineReportsEachFailure(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	ctx := context.Background()
	suffix := time.Now().UnixNano()
	s1, s2 := fmt.Sprintf("{ct}:cp1:%d", suffix), fmt.Sprintf("{ct}:cp2:%d", suffix)
	b := chainedBus(t, rdb)
	_, err := b.XAdd(ctx, s1, []byte(`{"a":1}`), 0)
	require.NoError(t, err)
	_, err = b.XAdd(ctx, s2, []byte(`{"a":1}`), 0)
	require.NoError(t, err)
	source := b.chain.Source()
	due, err := b.chain.Close(time.Now()) // two checkpoints, one per stream
	require.NoError(t, err)
	require.Len(t, due, 2)
	// the first as if written by an earlier try; the second's stream broken
	require.NoError(t, rdb.Set(ctx, CommitKey(due[0].Stream, due[0].Sig), "1", time.Minute).Err())
	require.NoError(t, rdb.Del(ctx, due[1].Stream).Err())
	require.NoError(t, rdb.Set(ctx, due[1].Stream, "x", 0).Err())
	err = b.writeCheckpoints(ctx, due)
	assert.Error(t, err, "the second checkpoint was not written")
	assert.NotEqual(t, source, b.chain.Source(), "the chain restarted")
	// and the link key of the failed one stays: a retry would call it written
	keys, argv := linkArgs(due[1].Stream, due[1].Sig, due[1].Values())
	require.NoError(t, rdb.Del(ctx, due[1].Stream).Err())
	_, err = linkScript.Run(ctx, rdb, keys, argv...).Text()
	n, _ := rdb.XLen(ctx, due[1].Stream).Result()
	assert.EqualValues(t, 1, n)
	assert.NoError(t, err, "a link whose XADD failed is written on retry")
}

// TestMarkedAckRerunIsNoReplay: acks with marks and no adds (the reader's
// pipelined acks) run twice: the second run does not call the entry it
// acknowledged a replay.
func TestMarkedAckRerunIsNoReplay(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	ctx := context.Background()
	stream, ids := delivered(t, rdb, "ack", 1)
	id := ids[0]
	b := chainedBus(t, rdb)
	items := markedAcks([]string{id}, []Mark{{ID: id, Source: "prod/1", Seq: 1}})
	first, err := b.runCommit(ctx, stream, "g", items)
	require.NoError(t, err)
	assert.EqualValues(t, 1, first.acked)
	again, err := b.runCommit(ctx, stream, "g", items)
	require.NoError(t, err)
	assert.Empty(t, again.replayed, "its own ack, rerun, is not a replay")
}
