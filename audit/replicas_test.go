package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/redistest"
)

// waitTimeout is how long these tests' appends wait for a replica.
const waitTimeout = 200 * time.Millisecond

// replicated starts a master of the test's own with one replica in sync.
func replicated(t *testing.T) (master, replica *redistest.Server) {
	t.Helper()
	master = redistest.Start(t, redistest.WithBackend(redistest.Process))
	return master, redistest.StartReplica(t, master)
}

// TestAuditNotReplicated: with MinReplicasAcked, Audit returns once the
// replica holds the event; with the replica away, it says within about
// MinReplicasTimeout that the master holds the event and the replica does
// not. A retry with the same event waits again and writes nothing twice.
func TestAuditNotReplicated(t *testing.T) {
	master, replica := replicated(t)
	ctx := context.Background()
	stream := testStream(t)
	bus := newBus(t, audit.Config{RedisURL: master.URL(), Stream: stream, MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout})
	_, err := bus.Audit(ctx, map[string]any{"action": "login"})
	require.NoError(t, err)

	require.NoError(t, replica.Pause())
	t.Cleanup(func() { _ = replica.Resume() })
	start := time.Now()
	id, err := bus.Audit(ctx, map[string]any{"action": "logout"})
	took := time.Since(start)
	require.ErrorIs(t, err, audit.ErrNotReplicated)
	var nr *audit.NotReplicatedError
	require.ErrorAs(t, err, &nr)
	assert.NotEmpty(t, id, "the master holds it")
	assert.Equal(t, id, nr.EntryID)
	assert.Equal(t, 0, nr.Replicas)
	assert.Equal(t, 1, nr.Want)
	assert.NotEmpty(t, nr.EventID)
	assert.Contains(t, err.Error(), nr.EventID)
	assert.Contains(t, err.Error(), "0 of 1 replicas")
	assert.GreaterOrEqual(t, took, waitTimeout)
	assert.Less(t, took, audit.DefaultWriteTimeout)

	_, err = bus.Audit(ctx, nr.Event)
	require.ErrorIs(t, err, audit.ErrNotReplicated, "a retry waits again")
	require.NoError(t, replica.Resume())
	again, err := bus.Audit(ctx, nr.Event)
	require.NoError(t, err)
	assert.Equal(t, id, again, "the retry finds the first append")
	evs := streamEvents(t, master.Client(t), stream)
	assert.Len(t, evs, 2, "each event once")
	assert.Len(t, streamEvents(t, replica.Client(t), stream), 2, "the replica holds them")
}

// TestProducerWaitsForReplicas: a Producer resolves an event only once the
// replicas hold it: while they do not, its batch is sent again (nothing is
// written twice) and the event waits; then it resolves as written, with
// the entry id of its first append, not as a duplicate.
func TestProducerWaitsForReplicas(t *testing.T) {
	master, replica := replicated(t)
	ctx := context.Background()
	stream := testStream(t)
	p := newProducer(t, audit.Config{RedisURL: master.URL(), Stream: stream, MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout,
		RetryDelay: 50 * time.Millisecond})
	require.NoError(t, replica.Pause())
	t.Cleanup(func() { _ = replica.Resume() })
	var pend []audit.Pending
	for i := range 3 {
		pd, err := p.Send(ctx, map[string]any{"n": i})
		require.NoError(t, err)
		pend = append(pend, pd)
	}
	wctx, cancel := context.WithTimeout(ctx, 4*waitTimeout)
	_, err := pend[0].Wait(wctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "not resolved while the replica lacks it")
	assert.Len(t, streamEvents(t, master.Client(t), stream), 3, "though the master holds it")

	require.NoError(t, replica.Resume())
	ids, err := master.Client(t).XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	for i, pd := range pend {
		r := pd.Result()
		require.NoError(t, r.Err, "event %d", i)
		assert.False(t, r.Duplicate, "event %d was written by this producer", i)
		assert.Equal(t, ids[i].ID, r.EntryID, "event %d: the id of its first append", i)
	}
	st := p.Stats()
	assert.EqualValues(t, 3, st.Written)
	assert.Zero(t, st.Duplicates)
	require.NoError(t, p.Flush(ctx))
	assert.Len(t, streamEvents(t, master.Client(t), stream), 3, "each event once")
}

// TestProducerCloseNotReplicated: events the replicas never confirmed
// before Close gave up resolve with ErrNotReplicated and the entry id the
// master gave them.
func TestProducerCloseNotReplicated(t *testing.T) {
	master, replica := replicated(t)
	ctx := context.Background()
	p := newProducer(t, audit.Config{RedisURL: master.URL(), MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout,
		RetryDelay: 50 * time.Millisecond})
	require.NoError(t, replica.Pause())
	t.Cleanup(func() { _ = replica.Resume() })
	pd, err := p.Send(ctx, map[string]any{"action": "delete"})
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 3*waitTimeout)
	defer cancel()
	require.Error(t, p.Close(cctx))
	r := pd.Result()
	require.ErrorIs(t, r.Err, audit.ErrNotReplicated)
	assert.NotErrorIs(t, r.Err, audit.ErrOutcomeUnknown, "the master answered: the outcome is known")
	assert.NotEmpty(t, r.EntryID)
	assert.Contains(t, r.Err.Error(), r.EntryID)
}

func TestMinReplicasValidation(t *testing.T) {
	keys := testKeys(t)
	for name, cfg := range map[string]audit.Config{
		"negative":                 {Keys: keys, MinReplicasAcked: -1},
		"negative timeout":         {Keys: keys, MinReplicasAcked: 1, MinReplicasTimeout: -time.Second},
		"timeout past the writes'": {Keys: keys, MinReplicasAcked: 1, MinReplicasTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := audit.New(cfg, nil)
			require.ErrorIs(t, err, audit.ErrInvalidConfig)
		})
	}
	newBus(t, audit.Config{Keys: keys, MinReplicasAcked: 1}) // the defaults fit
}
