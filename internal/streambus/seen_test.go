package streambus_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// TestSequenceState: Seen finds a copy of a chained entry (another entry id,
// same source and seq) replayed and a redelivery fresh; Commit records the
// marks with the ack, advances the low mark over what is acknowledged,
// refuses a copy that bypassed Seen, and reports a hole; SettleGap gives a
// hole up once; each consumer group has its own state. On a cluster every
// key stays in the stream's slot.
func TestSequenceState(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			var rdb redis.UniversalClient
			if mode == "cluster" {
				rdb = redistest.StartCluster(t).Client(t)
			} else {
				rdb = redistest.Start(t).Client(t)
			}
			testSequenceState(t, rdb)
		})
	}
}

func testSequenceState(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("k", map[string][]byte{"k": key})
	require.NoError(t, err)
	const stream, group = "{seq}:stream", "g"
	src, err := streambus.New(streambus.Config{Source: "src"}, slog.New(slog.DiscardHandler), rdb, keys)
	require.NoError(t, err)
	bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, keys)
	require.NoError(t, err)
	_, err = bus.XGroupCreate(ctx, stream, group, "0")
	require.NoError(t, err)

	// seq 1..5; 4 is never written; 2 is written twice (a copy).
	envs := make([]integrity.Envelope, 5)
	for i := range envs {
		envs[i], err = src.Seal(stream, []byte(`{"action":"x"}`))
		require.NoError(t, err)
	}
	for _, i := range []int{0, 1, 1, 2, 4} {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: envs[i].Values()}).Err())
	}
	batch, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "c", Count: 10, Block: -1})
	require.NoError(t, err)
	require.Len(t, batch.Entries, 5)
	marks := make([]streambus.Mark, len(batch.Entries))
	for i, e := range batch.Entries {
		marks[i] = e.Mark()
	}
	verdicts, err := bus.Seen(ctx, stream, group, marks)
	require.NoError(t, err)
	F, R := streambus.SeenFresh, streambus.SeenReplayed
	assert.Equal(t, []streambus.SeenVerdict{F, F, R, F, F}, verdicts)
	// A redelivery (same ids) is fresh; the copy is still a replay.
	verdicts, err = bus.Seen(ctx, stream, group, marks)
	require.NoError(t, err)
	assert.Equal(t, []streambus.SeenVerdict{F, F, R, F, F}, verdicts)

	// Commit all but the copy: seq 1..3 and 5 settle up to 3; 4 is a hole.
	var items []streambus.Item
	for i, e := range batch.Entries {
		if i != 2 {
			items = append(items, streambus.Item{ID: e.ID, Mark: marks[i]})
		}
	}
	res, err := bus.Commit(ctx, stream, group, items...)
	require.NoError(t, err)
	assert.EqualValues(t, 4, res.Acked)
	assert.Empty(t, res.Replayed)
	require.Len(t, res.Marks, 1)
	assert.Equal(t, streambus.SourceMark{Source: src.Source(), Low: 3, Next: 5}, res.Marks[0])
	from, to, ok := res.Marks[0].Hole()
	assert.True(t, ok)
	assert.Equal(t, [2]uint64{4, 4}, [2]uint64{from, to})

	// The copy, committed without a lookup, is refused and left pending.
	res, err = bus.Commit(ctx, stream, group, streambus.Item{ID: batch.Entries[2].ID, Mark: marks[2]})
	require.NoError(t, err)
	assert.Zero(t, res.Acked)
	assert.Equal(t, []int{0}, res.Replayed)
	// Dead-lettered, it is acknowledged without taking the mark.
	ids, err := bus.DeadLetter(ctx, stream, group, "{seq}:dead", batch.Entries[2].Letter(streambus.Reason{Kind: streambus.ReasonReplayed}))
	require.NoError(t, err)
	assert.NotEmpty(t, ids[0])

	// The hole is given up once.
	settled, mark, err := bus.SettleGap(ctx, stream, group, src.Source(), 4, 4)
	require.NoError(t, err)
	assert.EqualValues(t, 4, settled)
	assert.Equal(t, streambus.SourceMark{Source: src.Source(), Low: 5}, mark)
	settled, _, err = bus.SettleGap(ctx, stream, group, src.Source(), 4, 4)
	require.NoError(t, err)
	assert.Zero(t, settled)
	// Only the low mark remains of the source.
	n, err := rdb.Exists(ctx, streambus.SeenKey(stream, group, src.Source())).Result()
	require.NoError(t, err)
	assert.Zero(t, n)
	// seq 4 arriving now is a replay.
	id4, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: envs[3].Values()}).Result()
	require.NoError(t, err)
	_, err = bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "c", Count: 10, Block: -1})
	require.NoError(t, err)
	verdicts, err = bus.Seen(ctx, stream, group, []streambus.Mark{{ID: id4, Source: src.Source(), Seq: 4}})
	require.NoError(t, err)
	assert.Equal(t, []streambus.SeenVerdict{R}, verdicts)

	// Another consumer group processes the whole stream: its state is its
	// own.
	_, err = bus.XGroupCreate(ctx, stream, "other", "0")
	require.NoError(t, err)
	_, err = bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "other", Consumer: "c", Count: 10, Block: -1})
	require.NoError(t, err)
	verdicts, err = bus.Seen(ctx, stream, "other", marks)
	require.NoError(t, err)
	assert.Equal(t, []streambus.SeenVerdict{F, F, R, F, F}, verdicts)
}
