package processor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// TestCommitsWaitForReplicas: with a bus that waits for one replica
// (redis.min_replicas_acked 1), an entry counts as processed only once the
// replica holds its commit. While the replica is away, every commit (the
// atomic script of entries with attempts on record, and plain acks) fails
// with the wait, is retried, and nothing is counted; once it is back, each
// entry is committed and counted exactly once, and the replica holds the
// acks. (The master holds them from the first try: WAIT does not undo a
// write, it says whether a failover would keep it.)
func TestCommitsWaitForReplicas(t *testing.T) {
	master := redistest.Start(t, redistest.WithBackend(redistest.Process))
	replica := redistest.StartReplica(t, master)
	rdb := master.Client(t)
	ctx := context.Background()
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("k", map[string][]byte{"k": key})
	require.NoError(t, err)
	bus, err := streambus.New(streambus.Config{MinReplicasAcked: 1, MinReplicasTimeout: 200 * time.Millisecond}, nil, rdb, keys)
	require.NoError(t, err)
	const stream, group = "{rq}:stream", "g"
	_, err = bus.XGroupCreate(ctx, stream, group, "0")
	require.NoError(t, err)
	for i := range 4 {
		_, err := bus.XAdd(ctx, stream, fmt.Appendf(nil, `{"n":%d}`, i), 0)
		require.NoError(t, err)
	}
	// Two entries were run before, by this consumer, and failed once:
	// their attempts are cleared in the commit script. The other two are
	// new: their commit is a plain ack.
	read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "c", Count: 2, Block: -1})
	require.NoError(t, err)
	require.Len(t, read.Entries, 2)
	_, err = bus.Charge(ctx, stream, group, read.Entries[0].ID, read.Entries[1].ID)
	require.NoError(t, err)

	m := processor.NewMetrics()
	p, err := processor.New(processor.Config{Stream: stream, Group: group, Consumer: "c", DeadLetter: "{rq}:dead",
		Block: 100 * time.Millisecond}, nil, bus, host.NewPipeline(), m)
	require.NoError(t, err)
	require.NoError(t, replica.Pause())
	t.Cleanup(func() { _ = replica.Resume() })
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	require.Eventually(t, func() bool {
		return testutil.ToFloat64(m.RedisErrors.WithLabelValues("commit"))+testutil.ToFloat64(m.RedisErrors.WithLabelValues("xreadgroup")) >= 4
	}, 10*time.Second, 20*time.Millisecond, "commits fail, and are retried")
	assert.False(t, p.Ready(), "not ready while commits are not confirmed")
	assert.Zero(t, p.Stats().Processed.Load(), "nothing counts as done before the replica holds it")

	require.NoError(t, replica.Resume())
	require.Eventually(t, func() bool { return p.Stats().Processed.Load() == 4 }, 15*time.Second, 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	assert.EqualValues(t, 4, p.Stats().Processed.Load(), "each entry counted once")
	info, err := rdb.XPending(ctx, stream, group).Result()
	require.NoError(t, err)
	assert.Zero(t, info.Count)
	n, err := rdb.HLen(ctx, streambus.AttemptsKey(stream)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the attempts were cleared with the acks")

	// The replica holds every ack: a failover to it now would not
	// deliver any of the entries again.
	rc := replica.Client(t)
	rinfo, err := rc.XPending(ctx, stream, group).Result()
	if !assert.NoError(t, err) {
		return
	}
	assert.Zero(t, rinfo.Count)
	last, err := rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	require.NoError(t, err)
	groups, err := rc.XInfoGroups(ctx, stream).Result()
	require.NoError(t, err)
	require.Len(t, groups, 1)
	assert.Equal(t, last[0].ID, groups[0].LastDeliveredID, "and every delivery")
}
