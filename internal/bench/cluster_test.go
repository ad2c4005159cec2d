package bench

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/rediscluster"
	"github.com/auditproc/auditproc/internal/redisconn"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/shard"
)

// requireCluster skips (or fails, under AUDITPROC_NO_SKIP=1) without
// redis-server and redis-cli.
func requireCluster(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultRedisServer); err != nil {
		redistest.SkipOrFail(t, "redis-server is not on PATH (scripts/deps.sh installs it)")
	}
	if _, err := rediscluster.CLI(); err != nil {
		redistest.SkipOrFail(t, err.Error())
	}
}

// TestClusterPlace forms the bench's cluster and places three shards, two
// of whose slots start on the first master: each ends on a master of its
// own, one slot moved.
func TestClusterPlace(t *testing.T) {
	requireCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := startCluster(ctx, DefaultRedisServer, t.TempDir())
	require.NoError(t, err)
	defer c.stop()

	// redis-cli gives the first master slots 0-5460, the second
	// 5461-10922. (The slots of "{T}", "{T:1}" and "{T:2}" are not
	// independent: CRC-16 is linear, and no "{t<i>}" puts all three on one
	// master.)
	var stream string
	for i := 0; stream == "" && i < 10_000; i++ {
		s := fmt.Sprintf("{t%d}:stream", i)
		if redisconn.Slot(shard.Key(s, 0)) <= 5460 && redisconn.Slot(shard.Key(s, 1)) <= 5460 &&
			redisconn.Slot(shard.Key(s, 2)) > 5460 && redisconn.Slot(shard.Key(s, 2)) <= 10922 {
			stream = s
		}
	}
	require.NotEmpty(t, stream)
	placed, err := c.place(ctx, stream, 3)
	require.NoError(t, err)
	require.Len(t, placed, 3)
	nodes := map[*clusterNode]bool{}
	for k, p := range placed {
		owner, err := c.Owner(ctx, p.slot)
		require.NoError(t, err)
		assert.Equal(t, p.node, owner, "shard %d", k)
		nodes[owner] = true
		require.NoError(t, c.rdb.XAdd(ctx, &redis.XAddArgs{Stream: p.key, Values: []any{"k", "v"}}).Err(), "shard %d takes writes", k)
	}
	assert.Len(t, nodes, 3, "each shard on a master of its own")
	assert.Nil(t, placed[0].from, "shard 0 stays")
	assert.Equal(t, c.Nodes[0], placed[1].from, "shard 1 moved off shard 0's master")
	assert.Equal(t, c.Nodes[2], placed[1].node, "to the master no shard had")
	assert.Nil(t, placed[2].from, "shard 2 stays")

	require.NoError(t, c.emptySlots(ctx, placed))
	for _, p := range placed {
		n, err := c.rdb.Exists(ctx, p.key).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "%s emptied", p.key)
	}
	cpu, err := c.cpu(ctx)
	require.NoError(t, err)
	assert.Len(t, cpu, ClusterMasters)
}

// TestBenchClusterScenarios runs cluster rows of `auditproc bench` on a
// few hundred entries, on the 3-master cluster the bench starts itself,
// next to the standalone rows they are compared with: every shard is
// drained (the bench waits for every entry's ack) or written, on a master
// of its own, and Redis CPU is read from every node (the per-node split is
// not asserted: a few hundred entries are noise next to a master's cron).
func TestBenchClusterScenarios(t *testing.T) {
	requireCluster(t)
	rep := runSmall(t, smallConfig(t, "verify", "default", "cluster-verify-1", "cluster-default-3", "produce-emit", "cluster-emit-3"))

	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Name)
		assert.Positive(t, r.Throughput, r.Name)
		assert.Positive(t, r.CPU, r.Name)
		assert.Positive(t, r.PeakRSS, r.Name)
		if r.Shards == 0 {
			continue
		}
		assert.Positive(t, r.Ratio, "%s: compared with %s of the same run", r.Name, r.Of)
		require.Len(t, r.NodeCPU, ClusterMasters, r.Name)
		assert.Positive(t, r.RedisCPU, r.Name)
	}
	assert.Equal(t, []string{"verify", "default", "cluster-verify-1", "cluster-default-3", "produce-emit", "cluster-emit-3"}, names)
	require.Len(t, rep.Cluster, 4, "where each trail's shards are")
	for _, line := range rep.Cluster {
		if strings.HasPrefix(line, "cluster, 3 shards") {
			// One shard on each master.
			for n := 1; n <= ClusterMasters; n++ {
				assert.Contains(t, line, fmt.Sprintf("on node %d", n), line)
			}
		}
	}
	var b strings.Builder
	rep.Print(&b)
	t.Log("\n" + b.String())
	assert.Contains(t, b.String(), "| auditproc: verify, no plugins — standalone Redis")
	assert.Contains(t, b.String(), "| producer: auditproc emit --file — cluster, 3 shards")
}
