package streambus_test

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// waitTimeout is the replicas' wait of these tests: short, so that a
// paused replica costs little time.
const waitTimeout = 300 * time.Millisecond

// replicated starts a master with one replica in sync, each a server of
// the test's own, and returns them with a client of the master.
func replicated(t *testing.T) (master, replica *redistest.Server, rdb *redis.Client) {
	t.Helper()
	master = redistest.Start(t, redistest.WithBackend(redistest.Process))
	replica = redistest.StartReplica(t, master)
	return master, replica, master.Client(t)
}

// waitCalls is how many WAIT commands the server at addr ran.
func waitCalls(t *testing.T, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer func() { _ = c.Close() }()
	info, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	m := regexp.MustCompile(`cmdstat_wait:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// resumeAtEnd resumes a paused server when the test ends, whatever it did.
func pause(t *testing.T, s *redistest.Server) {
	t.Helper()
	require.NoError(t, s.Pause())
	t.Cleanup(func() { _ = s.Resume() })
}

// everyWrite runs each kind of write a Bus makes once, each of which must
// succeed, on a new stream.
func everyWrite(t *testing.T, bus *streambus.Bus, rdb redis.UniversalClient, keys *integrity.Keyring, stream string) {
	t.Helper()
	ctx := context.Background()
	group, dlq, out := "g", stream+":dead", stream+":out"
	_, err := bus.XGroupCreate(ctx, stream, group, "0")
	require.NoError(t, err)
	for i := range 6 {
		_, err := bus.XAdd(ctx, stream, event(i), 0)
		require.NoError(t, err, "xadd")
	}
	read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "c", Count: 3, Block: -1})
	require.NoError(t, err)
	require.Len(t, read.Entries, 3)
	res, err := bus.Commit(ctx, stream, group, streambus.Item{ID: read.Entries[0].ID, Adds: []streambus.Add{{Stream: out, Event: []byte(`{"a":1}`)}}})
	require.NoError(t, err, "commit")
	assert.EqualValues(t, 1, res.Acked)
	_, err = bus.DeadLetter(ctx, stream, group, dlq, read.Entries[1].Letter(streambus.Reason{Kind: streambus.ReasonRejected}))
	require.NoError(t, err, "dead letter")
	n, err := bus.XAck(ctx, stream, group, read.Entries[2].ID)
	require.NoError(t, err, "xack")
	assert.EqualValues(t, 1, n)
	more, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "c", Count: 1, Block: -1})
	require.NoError(t, err)
	require.Len(t, more.Entries, 1)
	again, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: group, Consumer: "c", Count: 1, Block: -1, Ack: []string{more.Entries[0].ID}})
	require.NoError(t, err, "acks with a read")
	assert.True(t, again.AcksSent)
	assert.EqualValues(t, 1, again.Acked)

	env, err := keys.Sign(stream, mustStamp(t, event(10)))
	require.NoError(t, err)
	_, dup, err := bus.AppendOnce(ctx, stream, env, 0, time.Minute)
	require.NoError(t, err, "append once")
	assert.False(t, dup)
	sig := env.Sig
	bres, err := bus.AppendBatches(ctx, []*streambus.AppendBatch{{Stream: stream, Producer: "p", FirstSeq: 1, KeyID: keys.ActiveKeyID(),
		Events: [][]byte{env.Event}, Sigs: [][]byte{[]byte(sig)}, EventIDs: []string{env.EventID}}}, 0, time.Minute)
	require.NoError(t, err, "append batches")
	require.NoError(t, bres[0].Err)
	require.NoError(t, bus.Checkpoint(ctx), "checkpoint")
	require.NoError(t, bus.CloseChain(ctx), "closing checkpoints")
}

func mustStamp(t *testing.T, ev []byte) []byte {
	t.Helper()
	s, _, err := integrity.Stamp(ev, time.Now())
	require.NoError(t, err)
	return s
}

// TestNoWaitWithoutMinReplicas: with MinReplicasAcked 0 (the default) no
// write sends WAIT.
func TestNoWaitWithoutMinReplicas(t *testing.T) {
	master := redistest.Start(t)
	rdb := master.Client(t)
	keys := newKeyring(t, "k1")
	bus, err := streambus.New(streambus.Config{Source: "nowait"}, nil, rdb, keys)
	require.NoError(t, err)
	everyWrite(t, bus, rdb, keys, "{nw}:stream")
	assert.Zero(t, waitCalls(t, master.Addr()))
}

// TestWaitConfirmsEveryWrite: with MinReplicasAcked 1 every write of the
// Bus (appends, commits, dead letters, acks, checkpoints) waits for the
// replica, on its own connection, and the replica holds it on return.
func TestWaitConfirmsEveryWrite(t *testing.T) {
	master, replica, rdb := replicated(t)
	keys := newKeyring(t, "k1")
	bus, err := streambus.New(streambus.Config{Source: "wait", MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout}, nil, rdb, keys)
	require.NoError(t, err)
	everyWrite(t, bus, rdb, keys, "{w}:stream")
	// xadd ×6, commit, dead letter, xack, the read's acks, append once,
	// append batches, and at least the closing checkpoints.
	assert.GreaterOrEqual(t, waitCalls(t, master.Addr()), 13)

	ctx := context.Background()
	rc := replica.Client(t)
	for _, key := range []string{"{w}:stream", "{w}:stream:out", "{w}:stream:dead"} {
		want, err := rdb.XLen(ctx, key).Result()
		require.NoError(t, err)
		got, err := rc.XLen(ctx, key).Result()
		require.NoError(t, err)
		assert.Equal(t, want, got, "the replica holds %s", key)
	}
}

// TestCommitNotReplicatedIsRetried: a commit the master took but no replica
// confirmed within the timeout fails with ErrNotReplicated; run again (a
// retry signs its emits anew), it keeps failing while the replica is away,
// then succeeds once it is back, and the emit is in the stream once.
func TestCommitNotReplicatedIsRetried(t *testing.T) {
	_, replica, rdb := replicated(t)
	keys := newKeyring(t, "k1")
	bus, err := streambus.New(streambus.Config{Source: "retry", MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout}, nil, rdb, keys)
	require.NoError(t, err)
	ctx := context.Background()
	stream, out := "{nr}:stream", "{nr}:out"
	_, err = bus.XGroupCreate(ctx, stream, "g", "0")
	require.NoError(t, err)
	_, err = bus.XAdd(ctx, stream, event(1), 0)
	require.NoError(t, err)
	read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g", Consumer: "c", Block: -1})
	require.NoError(t, err)
	require.Len(t, read.Entries, 1)
	item := streambus.Item{ID: read.Entries[0].ID, Adds: []streambus.Add{{Stream: out, Event: []byte(`{"copy":1}`)}}}

	pause(t, replica)
	source := bus.Source()
	start := time.Now()
	_, err = bus.Commit(ctx, stream, "g", item)
	took := time.Since(start)
	require.ErrorIs(t, err, streambus.ErrNotReplicated)
	var nr *streambus.NotReplicatedError
	require.ErrorAs(t, err, &nr)
	assert.Equal(t, 0, nr.Replicas)
	assert.Equal(t, 1, nr.Want)
	assert.Equal(t, stream, nr.Key)
	assert.Contains(t, err.Error(), `stream "{nr}:stream"`, "says where")
	assert.GreaterOrEqual(t, took, waitTimeout)
	assert.Less(t, took, waitTimeout+2*time.Second)
	assert.NotEqual(t, source, bus.Source(), "the emit may be lost on a failover: the chain goes on in a new session")

	_, err = bus.Commit(ctx, stream, "g", item)
	require.ErrorIs(t, err, streambus.ErrNotReplicated, "the rerun waits for the first run's write, which the replica still lacks")

	require.NoError(t, replica.Resume())
	res, err := bus.Commit(ctx, stream, "g", item)
	require.NoError(t, err)
	assert.Zero(t, res.Acked, "the first run acknowledged it")
	assert.Nil(t, res.IDs[0], "and appended its emit: the rerun appends nothing")

	entries, err := rdb.XRange(ctx, out, "-", "+").Result()
	require.NoError(t, err)
	events := 0
	for _, e := range entries {
		if e.Values["kind"] == integrity.KindEvent {
			events++
		}
	}
	assert.Equal(t, 1, events, "the emit is in the stream once (the reruns' links are voided)")
	pending, err := rdb.XPending(ctx, stream, "g").Result()
	require.NoError(t, err)
	assert.Zero(t, pending.Count)
}

// TestAckRerunOnAnotherConnectionWaits: WAIT counts the replicas that hold
// the writes of its own connection. An ack run again on a fresh connection
// acknowledges nothing (the first run did); it must still wait for the
// first run's write, not answer at once from the fresh connection's empty
// history. Acks that ride with a read wait before the read: a read whose
// acks fail delivers nothing.
func TestAckRerunOnAnotherConnectionWaits(t *testing.T) {
	master, replica, rdb := replicated(t)
	keys := newKeyring(t, "k1")
	cfg := streambus.Config{MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout}
	bus, err := streambus.New(cfg, nil, rdb, keys)
	require.NoError(t, err)
	ctx := context.Background()
	stream := "{ack}:stream"
	_, err = bus.XGroupCreate(ctx, stream, "g", "0")
	require.NoError(t, err)
	for i := range 3 {
		_, err = bus.XAdd(ctx, stream, event(i), 0)
		require.NoError(t, err)
	}
	read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g", Consumer: "c", Count: 2, Block: -1})
	require.NoError(t, err)
	require.Len(t, read.Entries, 2)
	first, second := read.Entries[0].ID, read.Entries[1].ID

	pause(t, replica)
	_, err = bus.XAck(ctx, stream, "g", first)
	require.ErrorIs(t, err, streambus.ErrNotReplicated)

	fresh, err := streambus.New(cfg, nil, master.Client(t), keys)
	require.NoError(t, err)
	_, err = fresh.XAck(ctx, stream, "g", first)
	require.ErrorIs(t, err, streambus.ErrNotReplicated, "a rerun on a new connection waits too")

	batch, err := fresh.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g", Consumer: "c", Block: -1, Ack: []string{second}})
	require.ErrorIs(t, err, streambus.ErrNotReplicated)
	assert.False(t, batch.AcksSent)
	assert.Zero(t, batch.Len(), "nothing read")
	info, err := rdb.XInfoGroups(ctx, stream).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, info[0].EntriesRead, "the third entry was not delivered")

	require.NoError(t, replica.Resume())
	n, err := fresh.XAck(ctx, stream, "g", first)
	require.NoError(t, err)
	assert.Zero(t, n, "acknowledged by the first run")
	batch, err = fresh.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g", Consumer: "c", Block: -1, Ack: []string{second}})
	require.NoError(t, err)
	assert.True(t, batch.AcksSent)
	assert.Len(t, batch.Entries, 1)
}

// TestWaitOnTheKeysMaster: in Redis Cluster the WAIT goes with the write to
// the master of its key (a keyless WAIT would go to any node, which counts
// the replicas of another master and its own connection's writes): each
// master runs the WAITs of its own keys, and a master whose replica is
// away fails its writes alone.
func TestWaitOnTheKeysMaster(t *testing.T) {
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	keys := newKeyring(t, "k1")
	bus, err := streambus.New(streambus.Config{MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout}, nil, rdb, keys)
	require.NoError(t, err)
	ctx := context.Background()
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)

	// A stream per master, named by a hash tag that lands in its slots.
	streams := map[string]*redistest.ClusterNode{}
	for i := 0; len(streams) < len(masters) && i < 1000; i++ {
		name := fmt.Sprintf("{m%d}:stream", i)
		slot, err := c.Keyslot(ctx, name)
		require.NoError(t, err)
		owner, err := c.Owner(ctx, slot)
		require.NoError(t, err)
		taken := false
		for _, n := range streams {
			taken = taken || n.ID == owner.ID
		}
		if !taken {
			streams[name] = owner
		}
	}
	require.Len(t, streams, 3)

	calls := func() map[string]int {
		m := map[string]int{}
		for _, n := range masters {
			m[n.ID] = waitCalls(t, n.Addr())
		}
		return m
	}
	for name, owner := range streams {
		before := calls()
		_, err := bus.XGroupCreate(ctx, name, "g", "0")
		require.NoError(t, err)
		_, err = bus.XAdd(ctx, name, event(1), 0)
		require.NoError(t, err, "append to %s", name)
		read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: name, Group: "g", Consumer: "c", Block: -1})
		require.NoError(t, err)
		require.Len(t, read.Entries, 1)
		_, err = bus.Commit(ctx, name, "g", streambus.Item{ID: read.Entries[0].ID,
			Adds: []streambus.Add{{Stream: name + ":out", Event: []byte(`{"a":1}`)}}})
		require.NoError(t, err, "commit on %s", name)
		after := calls()
		for _, n := range masters {
			if n.ID == owner.ID {
				// two, and one more for each NOSCRIPT (the first commit
				// on a node loads the script)
				assert.GreaterOrEqual(t, after[n.ID]-before[n.ID], 2, "the master of %s ran its WAITs", name)
			} else {
				assert.Equal(t, before[n.ID], after[n.ID], "another master ran no WAIT for %s", name)
			}
		}
	}

	var away string
	for name := range streams {
		away = name
		break
	}
	replica := c.ReplicaOf(ctx, streams[away])
	require.NotNil(t, replica)
	pause(t, replica.Server)
	for name := range streams {
		_, err := bus.XAdd(ctx, name, event(2), 0)
		if name == away {
			assert.ErrorIs(t, err, streambus.ErrNotReplicated, "%s: its master's replica is paused", name)
		} else {
			assert.NoError(t, err, "%s: its master's replica is up", name)
		}
	}
	require.NoError(t, replica.Resume())

	// Resharding: the slot moves to another master. The client still
	// sends the write to the old one, which answers MOVED; it reloads the
	// slots and sends write and WAIT to the new owner.
	slot, err := c.Keyslot(ctx, away)
	require.NoError(t, err)
	var to *redistest.ClusterNode
	for _, n := range masters {
		if n.ID != streams[away].ID {
			to = n
			break
		}
	}
	require.NoError(t, c.MigrateSlot(ctx, slot, to, 100, 0))
	before := calls()
	_, err = bus.XAdd(ctx, away, event(3), 0)
	require.NoError(t, err, "append after the slot moved")
	read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: away, Group: "g", Consumer: "c", Block: -1})
	require.NoError(t, err)
	require.NotEmpty(t, read.Entries)
	items := make([]streambus.Item, len(read.Entries))
	for i, e := range read.Entries {
		items[i] = streambus.Item{ID: e.ID}
	}
	_, err = bus.Commit(ctx, away, "g", items...)
	require.NoError(t, err, "commit after the slot moved")
	after := calls()
	assert.GreaterOrEqual(t, after[to.ID]-before[to.ID], 2, "the new owner ran the WAITs")
}

// TestWaitWithoutMaster: when the master of a key cannot be found (a
// cluster none of whose nodes answers), a write that waits for replicas
// fails with the reason, as any write does, and sends nothing.
func TestWaitWithoutMaster(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{closed}, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	keys := newKeyring(t, "k1")
	bus, err := streambus.New(streambus.Config{Source: "nomaster", MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout}, nil, rdb, keys)
	require.NoError(t, err)
	ctx := context.Background()
	stream := "{none}:stream"
	_, err = bus.XAdd(ctx, stream, event(1), 0)
	assert.ErrorContains(t, err, `find the master of "{none}:stream"`)
	_, err = bus.Commit(ctx, stream, "g", streambus.Item{ID: "1-1", Adds: []streambus.Add{{Stream: stream + ":out", Event: []byte(`{"a":1}`)}}})
	assert.ErrorContains(t, err, "find the master")
	_, err = bus.XAck(ctx, stream, "g", "1-1")
	assert.ErrorContains(t, err, "find the master")
	env, err := keys.Sign(stream, mustStamp(t, event(2)))
	require.NoError(t, err)
	_, _, err = bus.AppendOnce(ctx, stream, env, 0, time.Minute)
	assert.ErrorContains(t, err, "find the master")
	_, err = bus.AppendBatches(ctx, []*streambus.AppendBatch{{Stream: stream, Producer: "p", FirstSeq: 1, KeyID: env.KeyID,
		Events: [][]byte{env.Event}, Sigs: [][]byte{[]byte(env.Sig)}, EventIDs: []string{env.EventID}}}, 0, time.Minute)
	assert.ErrorContains(t, err, "find the master")
}

// TestWaitThroughSentinel: through Sentinel's failover client the write and
// its WAIT go to the master the sentinels name, on one connection.
func TestWaitThroughSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	rdb := s.Client(t)
	keys := newKeyring(t, "k1")
	bus, err := streambus.New(streambus.Config{MinReplicasAcked: 1, MinReplicasTimeout: waitTimeout}, nil, rdb, keys)
	require.NoError(t, err)
	ctx := context.Background()
	stream := uniqueName(t, "sentinel")
	// The replica's first acknowledgements after its sync can take a
	// second (StartReplica waits for them; StartSentinel does not).
	require.Eventually(t, func() bool {
		_, err := bus.XAdd(ctx, stream, event(1), 0)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	pause(t, s.Servers[1])
	_, err = bus.XAdd(ctx, stream, event(2), 0)
	require.ErrorIs(t, err, streambus.ErrNotReplicated)
	require.NoError(t, s.Servers[1].Resume())
	_, err = bus.XAdd(ctx, stream, event(3), 0)
	require.NoError(t, err)
	assert.Positive(t, waitCalls(t, s.Servers[0].Addr()))
}
