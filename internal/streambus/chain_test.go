package streambus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// TestChainedAppendsAndCheckpoints: a Bus with a Source appends envelope
// version 2 entries and checkpoints (by count, by time when idle, and a
// closing one); a read returns the events as Entries with their Link and
// the checkpoints apart; RequireChain refuses version 1 entries.
func TestChainedAppendsAndCheckpoints(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	v1 := f.add(t, 1)[0]

	chained, err := streambus.New(streambus.Config{Source: "svc",
		Checkpoint: integrity.ChainConfig{CheckpointEvery: 2, CheckpointInterval: 300 * time.Millisecond}},
		slog.New(slog.DiscardHandler), f.rdb, f.keys)
	require.NoError(t, err)
	for range 3 {
		_, err := chained.XAdd(ctx, f.stream, []byte(`{"action":"x"}`), 0)
		require.NoError(t, err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { chained.RunCheckpoints(rctx); close(done) }()
	// Idle: a checkpoint by time (after the one by count).
	require.Eventually(t, func() bool { return f.rdb.XLen(ctx, f.stream).Val() >= 6 }, 10*time.Second, 20*time.Millisecond)
	stop()
	<-done
	require.NoError(t, chained.CloseChain(ctx))
	_, err = chained.XAdd(ctx, f.stream, []byte(`{"action":"late"}`), 0)
	require.ErrorIs(t, err, integrity.ErrChainClosed)

	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Count: 100, Block: -1})
	require.NoError(t, err)
	require.Len(t, b.Entries, 4, "the v1 entry and three chained events")
	assert.Equal(t, v1.ID, b.Entries[0].ID)
	assert.Empty(t, b.Entries[0].Source)
	for i, e := range b.Entries[1:] {
		assert.Equal(t, chained.Source(), e.Source)
		assert.Equal(t, integrity.KindEvent, e.Kind)
		assert.Less(t, uint64(i), e.Seq)
		assert.Equal(t, e.Seq, e.Envelope().Seq, "the envelope round-trips for dead letters")
	}
	require.GreaterOrEqual(t, len(b.Checkpoints), 3, "by count, by time, closing")
	last := b.Checkpoints[len(b.Checkpoints)-1]
	cp, err := integrity.ParseCheckpoint(last.Event)
	require.NoError(t, err)
	assert.True(t, cp.Closing)
	assert.Equal(t, last.Seq-1, cp.LastSeq)

	strict, err := streambus.New(streambus.Config{RequireChain: true}, slog.New(slog.DiscardHandler), f.rdb, f.keys)
	require.NoError(t, err)
	require.NoError(t, f.rdb.XGroupCreate(ctx, f.stream, "strict", "0").Err())
	all, err := strict.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: "strict", Consumer: "c", Count: 100, Block: -1})
	require.NoError(t, err)
	require.Len(t, all.Tampered, 1)
	assert.Equal(t, v1.ID, all.Tampered[0].ID)
	assert.Equal(t, "malformed_envelope", all.Tampered[0].Reason)
	assert.Len(t, all.Entries, 3)
}
