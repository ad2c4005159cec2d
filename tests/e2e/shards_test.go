package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redisconn"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/shard"
)

// shardedConfig writes a configuration for a cluster whose trail has the
// given shards, keyed by actor: stream {t}:stream, dead letters {t}:dead,
// one stream sink {t}:out (shard k puts :k in the tag).
func (e *env) shardedConfig(c *redistest.Cluster, shards int) string {
	e.t.Helper()
	body := fmt.Sprintf(`redis:
  cluster: {addrs: [%q]}
stream: {name: "{t}:stream", shards: %d, partition_key: actor}
dead_letter: {stream: "{t}:dead"}
consumer: {block: 200ms, batch_size: 128, shutdown_timeout: 10s, state_dir: %q}
reclaim: {interval: 200ms, min_idle: 2s, max_deliveries: 3}
host: {cache_dir: %q}
log: {format: json, level: info}
metrics: {address: ""}
sinks:
  out: {type: stream, stream: "{t}:out"}
plugins:
  - name: e2e
    path: %s/e2e-go.wasm
    sinks: [out]
    config: {"sink": "out"}
`, c.Addrs()[0], shards, e.stateDir(), e.cache, e.wasm)
	path := filepath.Join(e.dir, fmt.Sprintf("sharded-%d-%d.yaml", shards, time.Now().UnixNano()))
	require.NoError(e.t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// spreadShards moves the (empty) slots of the shards' hash tags so that no
// two shards share a master while there are masters to spare: what an
// operator does once per shard (docs/scaling.md).
func spreadShards(t *testing.T, c *redistest.Cluster, streams []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	used := map[*redistest.ClusterNode]bool{}
	for _, s := range streams {
		slot, err := c.Keyslot(ctx, s)
		require.NoError(t, err)
		owner, err := c.Owner(ctx, slot)
		require.NoError(t, err)
		if used[owner] {
			for _, m := range masters {
				if !used[m] {
					require.NoError(t, c.MigrateSlot(ctx, slot, m, 100, 0))
					owner = m
					break
				}
			}
		}
		used[owner] = true
	}
}

// shardDrained reports whether every shard's group has read and acked all.
func shardDrained(ctx context.Context, rdb redis.UniversalClient, streams []string) bool {
	for _, s := range streams {
		pend, err := rdb.XPending(ctx, s, group).Result()
		info, err2 := rdb.XInfoGroups(ctx, s).Result()
		if err != nil || err2 != nil || pend.Count != 0 || len(info) != 1 || info[0].Lag != 0 {
			return false
		}
	}
	return true
}

// verifiedRecords reads the events of streams, verifying each: records
// (emits, letters, audit events), not the writers' checkpoints.
func verifiedRecords(t *testing.T, rdb redis.UniversalClient, keys *integrity.Keyring, stream string) []map[string]any {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(t, err)
	var out []map[string]any
	for _, m := range msgs {
		if m.Values[integrity.FieldKind] == integrity.KindCheckpoint {
			continue
		}
		env, err := keys.Verify(stream, m.Values)
		require.NoError(t, err, "entry %s of %s must verify", m.ID, stream)
		var ev map[string]any
		require.NoError(t, json.Unmarshal(env.Event, &ev))
		out = append(out, ev)
	}
	return out
}

// sinkEventIDs counts the records of the sink streams by the event_id of
// the audit event they came from.
func sinkEventIDs(t *testing.T, rdb redis.UniversalClient, keys *integrity.Keyring, sinks []string) map[string]int {
	t.Helper()
	count := map[string]int{}
	for _, s := range sinks {
		for _, rec := range verifiedRecords(t, rdb, keys, s) {
			id, _ := rec["event_id"].(string)
			count[id]++
		}
	}
	return count
}

// onceEach counts the event ids of want that got holds no time (missing)
// and more than once (doubled).
func onceEach(want map[string]bool, got map[string]int) (missing, doubled int) {
	for id := range want {
		switch got[id] {
		case 0:
			missing++
		case 1:
		default:
			doubled++
		}
	}
	return missing, doubled
}

// shardEvents reads the audit events of each shard's stream.
func shardEvents(t *testing.T, rdb redis.UniversalClient, keys *integrity.Keyring, streams []string) [][]map[string]any {
	t.Helper()
	out := make([][]map[string]any, len(streams))
	for k, s := range streams {
		out[k] = verifiedRecords(t, rdb, keys, s)
	}
	return out
}

// TestClusterShardedNoMessageLoss: a trail of three shards on a cluster of
// three masters (one replica each), 50,000 events appended by `auditproc
// emit` keyed by actor, two replicas of `auditproc run`. Every event lands
// on its key's shard in order, reaches the sink exactly once, and nothing
// stays pending or is dead-lettered; `status` shows each shard.
func TestClusterShardedNoMessageLoss(t *testing.T) {
	const n, shards = 50_000, 3
	e := newEnvWith(t)
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	cfg := e.shardedConfig(c, shards)
	streams, sinks, deads := make([]string, shards), make([]string, shards), make([]string, shards)
	for k := range shards {
		streams[k], sinks[k], deads[k] = shard.Key("{t}:stream", k), shard.Key("{t}:out", k), shard.Key("{t}:dead", k)
	}
	spreadShards(t, c, streams)

	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"actor":"user-%d","action":"read","seq":%d}`+"\n", i%101, i)
	}
	file := filepath.Join(e.dir, "events.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(b.String()), 0o600))
	ra := e.start("run", "--config", cfg, "--consumer", "replica-a")
	rb := e.start("run", "--config", cfg, "--consumer", "replica-b")
	code, stdout, stderr := e.run(3*time.Minute, "emit", "--config", cfg, "--file", file)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "(3 shards)")

	waitFor(t, 3*time.Minute, "every shard to be processed and acked", func() bool { return shardDrained(ctx, rdb, streams) })
	code, stdout, stderr = e.run(30*time.Second, "status", "--config", cfg)
	assert.Equal(t, 0, code, stderr)
	for _, s := range streams {
		assert.Contains(t, stdout, s, "status names every shard's stream")
	}
	ra.signal(syscall.SIGTERM)
	rb.signal(syscall.SIGTERM)
	assert.Equal(t, 0, ra.wait(30*time.Second))
	assert.Equal(t, 0, rb.wait(30*time.Second))

	// Each actor's events are on one shard, the one its key picks, in the
	// order they were emitted.
	events := shardEvents(t, rdb, e.keys, streams)
	ids := map[string]bool{}
	for k, evs := range events {
		assert.NotEmpty(t, evs, "shard %d holds events", k)
		last := map[string]float64{}
		for _, ev := range evs {
			actor := ev["actor"].(string)
			want := shard.Of([]byte(fmt.Sprintf(`{"actor":%q}`, actor)), "actor", shards, nil)
			require.Equal(t, want, k, "actor %s on shard %d", actor, k)
			seq := ev["seq"].(float64)
			if prev, ok := last[actor]; ok {
				require.Greater(t, seq, prev, "actor %s's events in order on shard %d", actor, k)
			}
			last[actor] = seq
			ids[ev["event_id"].(string)] = true
		}
	}
	require.Len(t, ids, n, "every event appended once")
	missing, doubled := onceEach(ids, sinkEventIDs(t, rdb, e.keys, sinks))
	assert.Zero(t, missing, "events that never reached the sink")
	assert.Zero(t, doubled, "events that reached the sink twice")
	for _, d := range deads {
		letters := 0
		msgs, err := rdb.XRange(ctx, d, "-", "+").Result()
		require.NoError(t, err)
		for _, m := range msgs {
			if m.Values[integrity.FieldKind] != integrity.KindCheckpoint {
				letters++
			}
		}
		assert.Zero(t, letters, "dead letters in %s", d)
	}
	code, stdout, stderr = e.run(time.Minute, "verify", "--config", cfg, "--all")
	assert.Equal(t, 0, code, "verify --all over every shard:\n%s\n%s", stdout, stderr)
}

// TestClusterCommitStaysInOneSlot: every key a sharded trail writes (the
// streams, the sequence state, the commit and producer keys) hashes to the
// slot of its shard's tag, so each commit is one script on one node; and
// the shards' slots differ.
func TestClusterCommitStaysInOneSlot(t *testing.T) {
	const shards = 3
	e := newEnvWith(t)
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	cfg := e.shardedConfig(c, shards)
	var lines []string
	for i := range 600 {
		lines = append(lines, fmt.Sprintf(`{"actor":"user-%d","action":"read","seq":%d}`, i%7, i))
	}
	// One event the plugin rejects, so each shard's dead-letter stream and
	// its seal are written too.
	lines = append(lines, `{"actor":"user-0","action":"read","reject":true,"seq":-1}`, `{"actor":"user-2","action":"read","reject":true,"seq":-2}`, `{"actor":"user-3","action":"read","reject":true,"seq":-3}`)
	file := filepath.Join(e.dir, "events.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	code, _, stderr := e.run(time.Minute, "emit", "--config", cfg, "--file", file)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = e.run(2*time.Minute, "run", "--config", cfg, "--consumer", "replica-a", "--stop-when-idle")
	require.Equal(t, 0, code, stderr)

	slots := map[int]int{} // slot -> shard
	for k := range shards {
		slot := redisconn.Slot(shard.Key("{t}:stream", k))
		_, dup := slots[slot]
		require.False(t, dup, "shards %d and %d share slot %d", slots[slot], k, slot)
		slots[slot] = k
	}
	perShard := map[int][]string{}
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			k, ok := slots[redisconn.Slot(key)]
			if !ok {
				return fmt.Errorf("key %q is in slot %d, which is no shard's", key, redisconn.Slot(key))
			}
			perShard[k] = append(perShard[k], key)
		}
		return iter.Err()
	})
	require.NoError(t, err)
	for k := range shards {
		keys := strings.Join(perShard[k], " ")
		for _, want := range []string{shard.Key("{t}:stream", k), shard.Key("{t}:out", k), shard.Key("{t}:dead", k)} {
			assert.Contains(t, perShard[k], want, "shard %d's keys: %s", k, keys)
		}
		assert.Greater(t, len(perShard[k]), 3, "shard %d keeps its integrity state in its slot too: %s", k, keys)
	}
}

// TestClusterGrowShards grows a trail from 2 to 4 shards while a producer
// appends and two replicas process, by the documented procedure: the
// replicas are restarted one at a time with 4 shards (they read the new,
// empty shards and go on with the old ones), then the producer switches to
// 4. Nothing is lost, nothing is doubled, nothing stays pending.
func TestClusterGrowShards(t *testing.T) {
	e := newEnvWith(t)
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	cfg2, cfg4 := e.shardedConfig(c, 2), e.shardedConfig(c, 4)
	streams, sinks := make([]string, 4), make([]string, 4)
	for k := range 4 {
		streams[k], sinks[k] = shard.Key("{t}:stream", k), shard.Key("{t}:out", k)
	}
	keys, err := audit.LoadKeyring(func(k string) string {
		if k == "AUDITPROC_HMAC_KEYS_FILE" {
			return e.keysFile
		}
		return ""
	})
	require.NoError(t, err)
	producer := func(shards int) *audit.Producer {
		p, err := audit.NewProducer(audit.Config{Client: rdb, Keys: keys, Stream: "{t}:stream", Shards: shards, PartitionKey: "actor"}, nil)
		require.NoError(t, err)
		return p
	}

	var (
		mu      sync.Mutex
		sent    []audit.Pending
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		current = producer(2)
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			pd, err := current.Send(ctx, fmt.Sprintf(`{"actor":"user-%d","action":"read","seq":%d}`, i%13, i))
			if err == nil {
				sent = append(sent, pd)
			}
			mu.Unlock()
			if i%50 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	started := func(p *proc) {
		waitFor(t, time.Minute, "a replica to start", func() bool { return len(p.logLines("processor_started")) == 1 })
	}
	ra := e.start("run", "--config", cfg2, "--consumer", "replica-a")
	rb := e.start("run", "--config", cfg2, "--consumer", "replica-b")
	started(ra)
	started(rb)
	// sentMore waits for 1,000 events more than were sent when it was
	// called: the writer runs on while replicas restart, so a fixed total
	// may already be reached when a phase begins.
	sentMore := func(what string) {
		mu.Lock()
		n := len(sent) + 1000
		mu.Unlock()
		waitFor(t, time.Minute, what, func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) >= n })
	}
	sentMore("1,000 events on 2 shards")
	// 1. Rolling restart of the replicas with 4 shards.
	for i, r := range []**proc{&ra, &rb} {
		(*r).signal(syscall.SIGTERM)
		require.Equal(t, 0, (*r).wait(30*time.Second))
		*r = e.start("run", "--config", cfg4, "--consumer", []string{"replica-a", "replica-b"}[i])
		started(*r)
		sentMore("1,000 more events")
	}
	// 2. The producer switches to 4 shards.
	mu.Lock()
	old := current
	current = producer(4)
	mu.Unlock()
	require.NoError(t, old.Close(ctx))
	sentMore("1,000 more events on 4 shards")
	close(stop)
	wg.Wait()
	require.NoError(t, current.Close(ctx))

	written := map[string]bool{}
	for _, pd := range sent {
		r, err := pd.Wait(ctx)
		require.NoError(t, err)
		written[r.EventID] = true
	}
	waitFor(t, 2*time.Minute, "every shard to be processed and acked", func() bool { return shardDrained(ctx, rdb, streams) })
	ra.signal(syscall.SIGTERM)
	rb.signal(syscall.SIGTERM)
	assert.Equal(t, 0, ra.wait(30*time.Second))
	assert.Equal(t, 0, rb.wait(30*time.Second))

	for k := 2; k < 4; k++ {
		n, err := rdb.XLen(ctx, streams[k]).Result()
		require.NoError(t, err)
		assert.Positive(t, n, "the new shard %d took events", k)
	}
	missing, doubled := onceEach(written, sinkEventIDs(t, rdb, e.keys, sinks))
	t.Logf("%d events written across the growth from 2 to 4 shards", len(written))
	assert.Zero(t, missing, "events written but never processed")
	assert.Zero(t, doubled, "events processed twice")
}

// TestShardCountIsRecorded: processors record the shard count they read;
// a producer that would write to shards no processor reads is refused, and
// so is a processor that would leave shards with entries unread; once
// those are drained the count can be lowered.
func TestShardCountIsRecorded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfgOf := func(shards int) string {
		return e.config(fmt.Sprintf(`stream: {shards: %d, partition_key: actor}
sinks:
  out: {type: stream, stream: "audit:out"}
plugins:
  - name: e2e
    path: $WASM/e2e-go.wasm
    sinks: [out]
    config: {"sink": "out"}
`, shards))
	}
	cfg1, cfg3, cfg4 := cfgOf(1), cfgOf(3), cfgOf(4)
	code, _, stderr := e.run(time.Minute, "run", "--config", cfg3, "--stop-when-idle")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "3", e.rdb.Get(ctx, "audit:stream:shards").Val())

	events := filepath.Join(e.dir, "events.jsonl")
	var b strings.Builder
	for i := range 90 {
		fmt.Fprintf(&b, `{"actor":"user-%d","action":"read","n":%d}`+"\n", i, i)
	}
	require.NoError(t, os.WriteFile(events, []byte(b.String()), 0o600))
	code, _, stderr = e.run(time.Minute, "emit", "--config", cfg4, "--file", events)
	assert.Equal(t, 2, code, "4 shards written, 3 read: %s", stderr)
	assert.Contains(t, stderr, "read 3 shards")
	assert.Zero(t, e.xlen("audit:stream:3"), "nothing written to the shard no processor reads")

	code, _, stderr = e.run(time.Minute, "emit", "--config", cfg3, "--file", events)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = e.run(time.Minute, "run", "--config", cfg1, "--stop-when-idle")
	assert.Equal(t, 2, code, "1 shard read while shards 1 and 2 hold entries: %s", stderr)
	assert.Contains(t, stderr, "shard 1 (audit:stream:1)")

	code, _, stderr = e.run(time.Minute, "run", "--config", cfg3, "--stop-when-idle")
	require.Equal(t, 0, code, stderr)
	assert.EqualValues(t, 90, e.records("audit:out")+e.records("audit:out:1")+e.records("audit:out:2"))
	code, _, stderr = e.run(time.Minute, "run", "--config", cfg1, "--stop-when-idle")
	require.Equal(t, 0, code, "drained: the count may be lowered: %s", stderr)
	assert.Equal(t, "1", e.rdb.Get(ctx, "audit:stream:shards").Val())
}
