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
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("k1", map[string][]byte{"k1": key})
	require.NoError(t, err)
	suffix := time.Now().UnixNano()
	stream, out := fmt.Sprintf("test:rerun:%d", suffix), fmt.Sprintf("test:rerun:%d:out", suffix)
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "$").Err())
	var ids []string
	for i := range 2 {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", i}}).Result()
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 10}).Err())
	require.NoError(t, rdb.XAck(ctx, stream, "g", ids[1]).Err()) // finished elsewhere

	b, err := New(Config{Source: "run.c"}, slog.New(slog.DiscardHandler), rdb, keys)
	require.NoError(t, err)
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
