package faults

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The CI size of each scenario: a few thousand events over a few seconds,
// with the fault in the middle.
const (
	ciEvents = 4000
	ciRate   = 800 // events per second: the load lasts about 5 s
)

// TestKillReplica kills a replica with SIGKILL mid-load: the other reclaims
// what it left pending and finishes it.
func TestKillReplica(t *testing.T) {
	c := newCluster(t, options{})
	a := c.startReplica("replica-a")
	c.startReplica("replica-b")
	p := c.produce(2*ciEvents, ciRate, 0)
	p.waitWritten(ciEvents/4, time.Minute)
	// Kill it while it holds work: a replica commits within milliseconds, so
	// a kill can land between two batches; then it is started and killed
	// again.
	var left int64
	for attempt := 0; attempt < 10 && left == 0; attempt++ {
		if attempt > 0 {
			a.start()
		}
		waitFor(t, 20*time.Second, "replica-a to hold pending entries", func() bool { return c.pendingOf("replica-a") > 0 })
		left = a.kill()
	}
	require.Positive(t, left, "replica-a was never killed with work in flight")
	waitFor(t, 30*time.Second, "replica-a's pending entries to be reclaimed by replica-b", func() bool { return c.pendingOf("replica-a") == 0 })
	c.note("replica-a's %d pending entries all claimed by replica-b", left)
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "kill -9 a replica mid-load")
	assert.GreaterOrEqual(t, r.Reclaimed, float64(left), "replica-b reclaimed the killed replica's entries")
	assert.Positive(t, r.Redelivered, "the killed replica's entries were delivered again")
}

// TestNetworkCut disconnects a replica from the network for longer than the
// reclaim idle time: its pending entries are reclaimed and finished by the
// other replica; once reconnected, its late acks find them no longer pending
// and emit nothing.
func TestNetworkCut(t *testing.T) {
	c := newCluster(t, options{})
	a := c.startReplica("replica-a")
	c.startReplica("replica-b")
	p := c.produce(ciEvents, ciRate, 0)
	p.waitWritten(ciEvents/4, time.Minute)
	waitFor(t, 10*time.Second, "replica-a to hold pending entries", func() bool { return c.pendingOf("replica-a") > 0 })
	a.disconnect()
	cut := time.Now()
	time.Sleep(300 * time.Millisecond)
	held := c.pendingOf("replica-a") // its acks in flight may have landed before the cut
	c.note("replica-a cut off with %d entries pending for it", held)
	waitFor(t, 30*time.Second, "replica-a's entries to be reclaimed while it is cut off", func() bool { return c.pendingOf("replica-a") == 0 })
	c.note("replica-a's pending entries all claimed by replica-b %s after the cut", time.Since(cut).Round(time.Millisecond))
	if d := 3*minIdle - time.Since(cut); d > 0 {
		time.Sleep(d) // cut for three times the reclaim idle time
	}
	a.connect()
	c.note("replica-a was cut off for %s (reclaim.min_idle %s)", time.Since(cut).Round(time.Millisecond), minIdle)
	reconnected := time.Now()
	resumed := true
	for !a.lastRead().After(reconnected) {
		if time.Since(reconnected) > 30*time.Second {
			resumed = false
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resumed {
		c.note("replica-a reads from Redis again %s after the reconnection", time.Since(reconnected).Round(time.Millisecond))
	} else {
		c.scrape(a) // its late acks, before it goes
		c.note("replica-a did NOT read from Redis again within 30s of the reconnection: killed, its goroutines dumped")
		a.quit()
	}
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "network cut of a replica, longer than min_idle")
	if held > 0 {
		assert.Positive(t, r.Reclaimed, "replica-b reclaimed the cut replica's entries")
	}
	c.note("replica-a logged redis_operation_failed %d times", a.logCount("redis_operation_failed"))
	// Liveness: the cut replica resumes by itself. Every connection has
	// TCP keepalive (5s idle, 3 probes 2s apart) and every command a
	// deadline, and a dial is tried once per attempt: go-redis's default
	// of five dials per attempt, each up to dial_timeout (5s) while the
	// name "redis" does not resolve, plus the 5s retry backoff, could keep
	// a reader away for 30s after the network was back, the whole window
	// this scenario waited before declaring the replica dead.
	// TestCutReplicaResumes (tests/e2e) cuts a replica off four times in a
	// row in standalone and cluster mode.
	assert.True(t, resumed, "replica-a resumes reading after the network comes back (liveness)")
}

// TestRedisRestart kills Redis (SIGKILL to redis-server) under load and
// starts it again, with AOF fsync everysec and always: the producer and the
// replicas resume by themselves.
func TestRedisRestart(t *testing.T) {
	for _, fsync := range []string{"everysec", "always"} {
		t.Run(fsync, func(t *testing.T) {
			c := newCluster(t, options{fsync: fsync})
			a, b := c.startReplica("replica-a"), c.startReplica("replica-b")
			p := c.produce(ciEvents, ciRate, 0)
			p.waitWritten(ciEvents/3, time.Minute)
			ctx := context.Background()
			before := p.count.Load()
			require.NoError(t, c.redis.Kill(ctx))
			c.note("Redis killed (SIGKILL) after %d acknowledged writes", before)
			time.Sleep(2 * time.Second)
			require.NoError(t, c.redis.Restart(ctx))
			c.note("Redis started again from its AOF; producer at %d acknowledged writes", p.count.Load())
			p.wait(2 * time.Minute)
			c.drain(2 * time.Minute)
			r := c.check(p, "Redis killed and restarted under load, appendfsync "+fsync)
			assert.Positive(t, r.ProducerErrs, "the producer saw the outage")
			assert.Zero(t, r.Lost, "no acknowledged write was lost")
			// A replica blocked in its read when Redis died may see only a
			// dropped connection, redialled at once; at least one logs both.
			failed, recovered := a.logCount("redis_operation_failed")+b.logCount("redis_operation_failed"),
				a.logCount("redis_recovered")+b.logCount("redis_recovered")
			c.note("replicas logged redis_operation_failed %d times, redis_recovered %d times", failed, recovered)
			assert.Positive(t, failed, "the replicas logged the outage")
			assert.Positive(t, recovered, "the replicas logged the recovery")
		})
	}
}

// TestRedisDownBatchSpool kills Redis for longer than the write timeout
// under the batching API with a spool: the producer spools what Redis does
// not take, drains it in order once Redis is back, and no event is lost or
// written twice.
func TestRedisDownBatchSpool(t *testing.T) {
	c := newCluster(t, options{fsync: "always"})
	c.startReplica("replica-a")
	c.startReplica("replica-b")
	p := c.produceBatched(ciEvents, ciRate, filepath.Join(t.TempDir(), "spool"))
	p.waitWritten(ciEvents/3, time.Minute)
	ctx := context.Background()
	require.NoError(t, c.redis.Kill(ctx))
	c.note("Redis killed (SIGKILL) after %d events sent", p.count.Load())
	time.Sleep(4 * time.Second) // four write timeouts
	require.NoError(t, c.redis.Restart(ctx))
	c.note("Redis started again; %d events sent", p.count.Load())
	p.wait(3 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "Redis killed for 4 s under the batching producer with a spool")
	p.mu.Lock()
	spooled := p.spooled
	p.mu.Unlock()
	c.note("events spooled while Redis was away, then drained: %d", spooled)
	assert.Positive(t, spooled, "the outage outlasted the write timeout: events were spooled")
	assert.Zero(t, r.Lost, "no event lost")
	assert.Zero(t, r.EntryDupes, "no event written twice")
	assert.Equal(t, ciEvents, r.Written, "every event written")
}

// TestRollingRestart stops (SIGTERM) and starts each of three replicas in
// turn under load.
func TestRollingRestart(t *testing.T) {
	c := newCluster(t, options{})
	rs := []*replica{c.startReplica("replica-a"), c.startReplica("replica-b"), c.startReplica("replica-c")}
	p := c.produce(ciEvents, ciRate, 0)
	p.waitWritten(ciEvents/5, time.Minute)
	for _, r := range rs {
		r.stop()
		r.start()
		time.Sleep(500 * time.Millisecond)
	}
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "rolling restart of three replicas under load")
	for _, rep := range rs {
		assert.Equal(t, 2, rep.logCount("shutdown_started"), "%s drained once on its SIGTERM and once at the end", rep.name)
	}
	_ = r
}

// TestTrappingPlugin runs a plugin that traps on about 1% of deliveries: each
// trapped event is retried (a fresh instance) and finished; nothing is lost.
func TestTrappingPlugin(t *testing.T) {
	c := newCluster(t, options{trapPerMille: 10})
	c.startReplica("replica-a")
	c.startReplica("replica-b")
	p := c.produce(ciEvents, ciRate, 0)
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "a plugin trapping on 1% of deliveries")
	assert.Positive(t, r.Redelivered, "trapped deliveries were retried")
	assert.InDelta(t, ciEvents/100, r.Redelivered, ciEvents/100, "about 1% of the events trapped once")
}

// TestPoisonEvents mixes poison events (a plugin retries them forever) among
// good ones: each poison event goes to the dead-letter stream with its
// reason after max deliveries, and the good ones are all processed.
func TestPoisonEvents(t *testing.T) {
	c := newCluster(t, options{})
	c.startReplica("replica-a")
	c.startReplica("replica-b")
	p := c.produce(ciEvents, ciRate, 500)
	p.wait(2 * time.Minute)
	c.drain(2 * time.Minute)
	r := c.check(p, "poison events among good ones")
	assert.Equal(t, ciEvents/500, r.Poison)
	assert.Equal(t, r.Poison, r.DeadLettered, "every poison event, and nothing else, is dead-lettered")
	assert.Equal(t, r.Poison, r.Reasons["max_deliveries"])
}
