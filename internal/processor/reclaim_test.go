package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/processor"
)

// TestQueuedAcksAreNotReclaimed: an entry whose pipeline finished and
// whose ack waits in the ack queue (up to ackDelay on an idle stream, the
// whole outage while Redis is down) is no longer in inflightIDs, yet still
// pending in Redis: the reclaimer claims it again and it is run (counted,
// acked) a second time, or dead-lettered past MaxDeliveries although it
// was processed. Before the ack queue, inflightIDs covered an entry until
// its commit (the ack) returned.
func TestQueuedAcksAreNotReclaimed(t *testing.T) {
	f := newAckFixture(t)
	const n = 50
	p := f.processor(t, processor.Config{
		Block:   10 * time.Second,
		MinIdle: time.Millisecond, ReclaimInterval: time.Millisecond, MaxDeliveries: 1,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, 5*time.Second, time.Millisecond)
	for range n {
		f.add(t, 1)
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, 5*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	st := p.Stats()
	assert.EqualValues(t, n, st.Processed.Load(), "each entry processed once")
	assert.Zero(t, st.LateAcks.Load(), "no entry acked twice")
	assert.Zero(t, st.Exhausted.Load(), "no processed entry dead-lettered")
	dead, err := f.rdb.XLen(context.Background(), "acks:dead").Result()
	require.NoError(t, err)
	assert.Zero(t, dead, "dead letters")
}
