package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

// The scenarios on Redis Cluster (options.redisCluster): three masters with
// a replica each, containers on the scenario's network, every key of the
// pipeline under the hash tag {audit} (one slot, one master at a time).

// forgedPerScenario is how many forged entries each cluster scenario
// appends before its load.
const forgedPerScenario = 4

// lostWithMaster is why acknowledged writes may be missing after a master
// failed while the producer did not wait for a replica.
const lostWithMaster = "lost with the old master: acknowledged by it, not yet replicated when it failed (asynchronous replication, min_replicas_acked 0)"

// lagFor is how long TestClusterMasterKill keeps the replica of the master
// it kills cut off the network first: under load, a second of writes the
// master acknowledges and the replica does not get.
const lagFor = time.Second

// TestClusterMasterKill kills (SIGKILL) the master serving the pipeline's
// slot under load, while its replica lags: the replica was cut off the
// network for lagFor, less than the node timeout, as by a network hiccup,
// and is connected again right after the kill. After the node timeout the
// replica is promoted with what it has; the producer and both replicas
// follow it by themselves, and the killed node, started again, rejoins as
// a replica. With min_replicas_acked 0 (the default) the writes the old
// master acknowledged meanwhile are lost with it: counted, not a
// violation. With min_replicas_acked 1 for the producer and the replicas,
// the master's acknowledgement waits for the replica, so nothing the
// producer saw acknowledged may be lost, and the processed trail has no
// gap. (TestClusterMasterNetworkCut fails a master over without a lagging
// replica.)
func TestClusterMasterKill(t *testing.T) {
	for _, acked := range []int{0, 1} {
		t.Run(fmt.Sprintf("min_replicas_acked_%d", acked), func(t *testing.T) {
			c := newCluster(t, options{redisCluster: true, minReplicas: acked})
			rs := c.startReplicas("replica-a", "replica-b")
			c.forge(forgedPerScenario)
			p := c.produce(ciEvents, ciRate, 0)
			p.waitWritten(ciEvents/3, time.Minute)
			old, promoted := c.failMaster(p, lagFor, "killed (SIGKILL)", func(ctx context.Context, m *redistest.ClusterNode) error { return m.Kill(ctx) })
			if acked == 0 {
				c.waitReading(rs, "after the promotion, the killed master still down")
			}
			// With min_replicas_acked 1 the promoted master, without a
			// replica of its own, confirms no write until the killed node
			// is back as its replica: the producer and the replicas' commits
			// wait for it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, old.Restart(ctx))
			require.NoError(t, c.rc.WaitHealthy(ctx))
			require.Equal(t, old, c.rc.ReplicaOf(ctx, promoted), "the killed master rejoined as a replica of %s", c.nodeName(promoted))
			c.note("%s started again: a replica of %s", c.nodeName(old), c.nodeName(promoted))
			if acked > 0 {
				c.waitReading(rs, "after the killed master rejoined as a replica")
			}
			p.wait(2 * time.Minute)
			c.drain(2 * time.Minute)
			r := c.check(p, fmt.Sprintf("Redis Cluster: kill -9 the master of the slot, its replica lagging, min_replicas_acked %d", acked))
			assert.Positive(t, r.ProducerErrs, "the producer saw the failover")
			assert.Zero(t, r.DLQGood, "no good event dead-lettered")
			assert.Equal(t, forgedPerScenario, r.ForgedDLQ, "every forged entry dead-lettered")
			if acked > 0 {
				assert.Zero(t, r.Lost, "with min_replicas_acked %d nothing acknowledged is lost", acked)
			}
		})
	}
}

// maxMoves bounds TestClusterSlotMigration's moves: each takes a second or
// two (the producer's event keys, one per event, move with the slot) and
// slows the producer down meanwhile.
const maxMoves = 6

// TestClusterSlotMigration moves the pipeline's slot from master to master
// (MIGRATE in batches, so that for a while the keys of one commit stand on
// two nodes: clients meet ASK, TRYAGAIN and MOVED) at least twice and up
// to maxMoves times while two replicas process and the producer appends:
// nothing lost, nothing doubled, no good event dead-lettered.
func TestClusterSlotMigration(t *testing.T) {
	c := newCluster(t, options{redisCluster: true})
	c.startReplicas("replica-a", "replica-b")
	c.forge(forgedPerScenario)
	p := c.produce(ciEvents, ciRate, 0)
	p.waitWritten(ciEvents/5, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	slot := c.slot()
	moves := 0
moving:
	for moves < maxMoves {
		select {
		case <-p.done:
			if moves >= 2 {
				break moving
			}
		default:
		}
		masters, err := c.rc.Masters(ctx)
		require.NoError(t, err)
		from := c.owner()
		to := masters[0]
		if to == from {
			to = masters[1]
		}
		keys := c.keysInSlot(ctx, from, slot)
		start := time.Now()
		require.NoError(t, c.rc.MigrateSlot(ctx, slot, to, 100, 20*time.Millisecond))
		moves++
		c.note("slot %d moved from %s to %s (%d keys, 100 per MIGRATE) in %s; producer at %d acknowledged writes",
			slot, c.nodeName(from), c.nodeName(to), keys, time.Since(start).Round(time.Millisecond), p.count.Load())
		time.Sleep(200 * time.Millisecond)
	}
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, fmt.Sprintf("Redis Cluster: the slot moved %d times while replicas process", moves))
	assert.Zero(t, r.Lost, "nothing lost")
	assert.Zero(t, r.EntryDupes, "no event written twice")
	assert.Zero(t, r.DLQGood, "no good event dead-lettered")
	assert.Equal(t, forgedPerScenario, r.ForgedDLQ, "every forged entry dead-lettered, nothing else")
	assert.Equal(t, r.Processed, r.SinkOnce, "every processed entry is in every sink exactly once")
}

// TestClusterMasterNetworkCut cuts the master serving the pipeline's slot
// off the network (docker network disconnect: the cluster bus and the
// replicas lose it, and the producer, on the test's host, its published
// port) for longer than the cluster node timeout: its replica is promoted, the producer and both replicas follow
// by themselves, and once the network is back the old master rejoins as a
// replica. Its connections open at the cut stay dead: clients notice by
// their own timeouts.
func TestClusterMasterNetworkCut(t *testing.T) {
	c := newCluster(t, options{redisCluster: true})
	rs := c.startReplicas("replica-a", "replica-b")
	c.forge(forgedPerScenario)
	p := c.produce(ciEvents, ciRate, 0)
	p.waitWritten(ciEvents/3, time.Minute)
	old, promoted := c.failMaster(p, 0, "cut off the network", func(ctx context.Context, m *redistest.ClusterNode) error { return m.Disconnect(ctx) })
	c.waitReading(rs, "after the promotion, the old master still cut off")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, old.Connect(ctx))
	reconnected := time.Now()
	require.NoError(t, c.rc.WaitHealthy(ctx))
	require.Equal(t, old, c.rc.ReplicaOf(ctx, promoted), "the cut master rejoined as a replica of %s", c.nodeName(promoted))
	c.note("%s connected again, a replica of %s %s later", c.nodeName(old), c.nodeName(promoted), time.Since(reconnected).Round(time.Millisecond))
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "Redis Cluster: network cut of the master of the slot, longer than the node timeout")
	assert.Positive(t, r.ProducerErrs, "the producer saw the failover")
	assert.Zero(t, r.DLQGood, "no good event dead-lettered")
	assert.Equal(t, forgedPerScenario, r.ForgedDLQ, "every forged entry dead-lettered")
}

// failMaster makes the master of the pipeline's slot fail (how says what
// fail does to it) and waits until the cluster promoted its replica and
// settled. With lag, the replica is cut off the network for that long
// first, and connected again right after the failure. With
// min_replicas_acked 0, the writes the master acknowledged but had not
// replicated are lost with it: the check excuses them.
func (c *cluster) failMaster(p *producer, lag time.Duration, how string, fail func(context.Context, *redistest.ClusterNode) error) (old, promoted *redistest.ClusterNode) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old = c.owner()
	promoted = c.rc.ReplicaOf(ctx, old)
	require.NotNil(c.t, promoted, "the master of the slot has a replica")
	c.masterFailed = true
	if c.minReplicas == 0 {
		c.lossExcuse = lostWithMaster
	}
	written := p.count.Load()
	if lag > 0 {
		require.NoError(c.t, promoted.Disconnect(ctx))
		written = p.count.Load() // the cut holds once Disconnect returns
		c.note("%s, the replica of %s, cut off the network after %d acknowledged writes: it lags", c.nodeName(promoted), c.nodeName(old), written)
		time.Sleep(lag)
		lagged := p.count.Load()
		c.note("%d writes acknowledged while %s was cut off for %s", lagged-written, c.nodeName(promoted), lag)
		written = lagged
	}
	require.NoError(c.t, fail(ctx, old))
	at := time.Now()
	c.note("%s, master of slot %d, %s after %d acknowledged writes", c.nodeName(old), c.slot(), how, written)
	if lag > 0 {
		require.NoError(c.t, promoted.Connect(ctx))
		c.note("%s connected again", c.nodeName(promoted))
	}
	require.NoError(c.t, c.rc.WaitHealthy(ctx))
	require.Equal(c.t, promoted, c.owner(), "the replica of %s was promoted", c.nodeName(old))
	c.note("%s promoted, the cluster healthy again %s after the failure", c.nodeName(promoted), time.Since(at).Round(time.Millisecond))
	return old, promoted
}

// keysInSlot is how many keys node holds in slot (CLUSTER COUNTKEYSINSLOT
// asked of that node, not of whichever node the cluster client picks).
func (c *cluster) keysInSlot(ctx context.Context, node *redistest.ClusterNode, slot int) int64 {
	c.t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: node.Addr()})
	defer cl.Close()
	n, err := cl.ClusterCountKeysInSlot(ctx, slot).Result()
	require.NoError(c.t, err)
	return n
}

// waitReading waits until every replica of rs read from Redis again from
// now, after a failover (liveness: they follow the promoted replica by
// themselves); when says when that is.
func (c *cluster) waitReading(rs []*replica, when string) {
	c.t.Helper()
	since := time.Now()
	for _, r := range rs {
		waitFor(c.t, 30*time.Second, r.name+" to read again after the failover", func() bool { return r.lastRead().After(since) })
	}
	c.note("every replica read again %s %s", time.Since(since).Round(time.Millisecond), when)
}
