package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/rediscluster"
	"github.com/auditproc/auditproc/internal/redisconn"
	"github.com/auditproc/auditproc/internal/shard"
)

// ClusterMasters is how many masters the cluster rows' cluster has (no
// replicas: a replica's copy costs its master the same whatever the shard
// count, and the machine has cores for the masters only).
const ClusterMasters = 3

// clusterNodeTimeout is the cluster-node-timeout of the bench's nodes.
const clusterNodeTimeout = 5 * time.Second

// clusterNode is a master of the bench's cluster.
type clusterNode struct {
	*server
	id  string
	n   int           // 1-based, in creation order: how the report names it
	rdb *redis.Client // to the node alone (INFO, its slots' keys)
}

func (n *clusterNode) Addr() string      { return n.addr }
func (n *clusterNode) Running() bool     { return n.cmd.ProcessState == nil }
func (n *clusterNode) ClusterID() string { return n.id }

// cluster is a throwaway Redis Cluster of ClusterMasters redis-server
// children on loopback ports, formed with `redis-cli --cluster create`.
type cluster struct {
	rediscluster.Cluster[*clusterNode]
	rdb *redis.ClusterClient
	url string // redis+cluster://, every node a seed
}

// startCluster starts the nodes (no persistence, as startRedis), joins
// them and waits until every node serves its slots.
func startCluster(ctx context.Context, bin, dir string) (*cluster, error) {
	c := &cluster{}
	var addrs []string
	for i := range ClusterMasters {
		d := filepath.Join(dir, fmt.Sprintf("cluster-%d", i+1))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		bus, err := rediscluster.FreePort()
		if err != nil {
			return nil, err
		}
		s, err := startRedis(ctx, bin, d, rediscluster.NodeArgs(bus, clusterNodeTimeout)...)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, &clusterNode{server: s, n: i + 1, rdb: redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: 1})})
		addrs = append(addrs, s.addr)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := rediscluster.Create(ctx, addrs, 0)
	for _, n := range c.Nodes {
		if err == nil {
			n.id, err = rediscluster.ID(ctx, n.addr)
		}
	}
	if err == nil {
		err = c.WaitHealthy(ctx)
	}
	if err != nil {
		c.stop()
		return nil, err
	}
	c.url = "redis+cluster://" + strings.Join(addrs, ",")
	c.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	return c, nil
}

func (c *cluster) stop() {
	if c.rdb != nil {
		_ = c.rdb.Close()
	}
	for _, n := range c.Nodes {
		_ = n.rdb.Close()
		n.stop()
	}
}

// cpu is every node's used_cpu_sys + used_cpu_user so far (INFO CPU), in
// node order.
func (c *cluster) cpu(ctx context.Context) ([]time.Duration, error) {
	out := make([]time.Duration, len(c.Nodes))
	for i, n := range c.Nodes {
		info, err := n.rdb.Info(ctx, "cpu").Result()
		if err != nil {
			return nil, fmt.Errorf("INFO CPU on %s: %w", n.addr, err)
		}
		if out[i], err = parseCPU(info); err != nil {
			return nil, fmt.Errorf("INFO CPU on %s: %w", n.addr, err)
		}
	}
	return out, nil
}

// parseCPU is used_cpu_sys + used_cpu_user of an INFO CPU reply.
func parseCPU(info string) (time.Duration, error) {
	sys, err := infoField(info, "used_cpu_sys")
	if err != nil {
		return 0, err
	}
	user, err := infoField(info, "used_cpu_user")
	if err != nil {
		return 0, err
	}
	return time.Duration((sys + user) * float64(time.Second)), nil
}

// infoField is the number of field name in an INFO reply.
func infoField(info, name string) (float64, error) {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == name {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("INFO %s: %w", name, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("INFO has no %s", name)
}

// placement is where a shard's slot is.
type placement struct {
	key        string
	slot       int
	node, from *clusterNode // from: the master it was moved from, nil if not moved
}

func (p placement) String() string {
	s := fmt.Sprintf("%s slot %d on node %d", p.key, p.slot, p.node.n)
	if p.from != nil {
		s += fmt.Sprintf(" (moved from node %d)", p.from.n)
	}
	return s
}

// place puts the slots of the first n shards of stream on distinct
// masters (as many as there are masters): a shard whose slot's master
// already serves an earlier shard's slot has its slot moved, empty, to a
// master that serves none of the shards (MigrateSlot), so that only
// clashing slots move. Call it before anything is written to the shards.
func (c *cluster) place(ctx context.Context, stream string, n int) ([]placement, error) {
	out := make([]placement, n)
	claimed := map[*clusterNode]bool{}
	for k := range out {
		p := placement{key: shard.Key(stream, k)}
		p.slot = redisconn.Slot(p.key)
		owner, err := c.Owner(ctx, p.slot)
		if err != nil {
			return nil, err
		}
		p.node = owner
		if claimed[owner] {
			p.from = owner // to be moved
		}
		claimed[owner] = true
		out[k] = p
	}
	for k, p := range out {
		if p.from == nil {
			continue
		}
		to := p.from
		for _, m := range c.Nodes {
			if !claimed[m] {
				to = m
				break
			}
		}
		if to == p.from {
			out[k].from = nil // more shards than masters: it shares one
			continue
		}
		if err := c.MigrateSlot(ctx, p.slot, to, 0, 0); err != nil {
			return nil, fmt.Errorf("move slot %d of %s: %w", p.slot, p.key, err)
		}
		claimed[to] = true
		out[k].node = to
	}
	return out, nil
}

// emptySlots deletes every key in the slots of placed shards (a producer
// scenario's stream and its producer state, between rounds).
func (c *cluster) emptySlots(ctx context.Context, placed []placement) error {
	for _, p := range placed {
		for {
			keys, err := p.node.rdb.ClusterGetKeysInSlot(ctx, p.slot, 1000).Result()
			if err == nil && len(keys) > 0 {
				err = p.node.rdb.Unlink(ctx, keys...).Err()
			}
			if err != nil {
				return fmt.Errorf("empty slot %d on node %d: %w", p.slot, p.node.n, err)
			}
			if len(keys) == 0 {
				break
			}
		}
	}
	return nil
}

// ClusterShards are the shard counts of the cluster rows: one shard, and
// one per master.
var ClusterShards = []int{1, ClusterMasters}

// clusterTrail is a trail of the cluster scenarios: the stream
// "{tag}:stream" in shards shards (shard.Key), its dead-letter stream
// and the default pipeline's stream sinks under the same hash tag, each
// shard's slot on a master of its own (place).
type clusterTrail struct {
	tag    string
	shards int
	sinks  []string // the stream sinks' names
	placed []placement
	filled bool
	size   int // the prefilled events' mean size, bytes
}

// key is the trail's key of role ("stream", "dead", a sink's name) in
// shard 0.
func (t *clusterTrail) key(role string) string { return "{" + t.tag + "}:" + role }

func (t *clusterTrail) shardKeys(role string) []string {
	out := make([]string, t.shards)
	for k := range out {
		out[k] = shard.Key(t.key(role), k)
	}
	return out
}

// streams are the trail's audit streams, shard 0 first.
func (t *clusterTrail) streams() []string { return t.shardKeys("stream") }

// outputs are every shard's dead-letter and sink streams.
func (t *clusterTrail) outputs() []string {
	out := t.shardKeys("dead")
	for _, s := range t.sinks {
		out = append(out, t.shardKeys(s)...)
	}
	return out
}

// env is what a child's environment adds to run on the trail (and to
// check its configuration).
func (t *clusterTrail) env(url string) []string {
	return []string{"AUDITPROC_REDIS_URL=" + url, "AUDITPROC_STREAM_SHARDS=" + strconv.Itoa(t.shards),
		"AUDITPROC_STREAM_NAME=" + t.key("stream"), "AUDITPROC_DEAD_LETTER_STREAM=" + t.key("dead")}
}

// sinkConfig is sinks with every stream sink's stream the trail's.
func (t *clusterTrail) sinkConfig(sinks map[string]config.Sink) map[string]config.Sink {
	out := make(map[string]config.Sink, len(sinks))
	for name, s := range sinks {
		if s.Type == config.SinkStream {
			s.Stream = t.key(name)
		}
		out[name] = s
	}
	return out
}

// notes say where the trail's shards are.
func (t *clusterTrail) notes() string {
	parts := make([]string, len(t.placed))
	for i, p := range t.placed {
		parts[i] = p.String()
	}
	return fmt.Sprintf("%s: %s", shardsTitle(t.shards), strings.Join(parts, "; "))
}

// startCluster starts the cluster of the cluster scenarios (r.cluster,
// stopped by the caller) and places the trails of the drain scenarios
// (tags bench1, bench3) and of the producer scenarios (produce1,
// produce3).
func (r *runner) startCluster(ctx context.Context) error {
	t0 := time.Now()
	c, err := startCluster(ctx, r.cfg.RedisServer, r.dir)
	if err != nil {
		return fmt.Errorf("bench: cluster: %w", err)
	}
	for _, kind := range []string{"bench", "produce"} {
		for _, n := range ClusterShards {
			// bench1, bench3: the drains'; produce1, produce3: the producers'.
			t := &clusterTrail{tag: fmt.Sprintf("%s%d", kind, n), shards: n}
			if t.placed, err = c.place(ctx, t.key("stream"), n); err != nil {
				c.stop()
				return fmt.Errorf("bench: cluster: %w", err)
			}
			r.trails = append(r.trails, t)
		}
	}
	r.cluster = c
	r.log.Info("cluster_started", slog.String("url", c.url), slog.Duration("took", time.Since(t0)))
	return nil
}

// trail is the cluster trail of kind ("bench", "produce") with n shards.
func (r *runner) trail(kind string, n int) *clusterTrail {
	for _, t := range r.trails {
		if t.tag == fmt.Sprintf("%s%d", kind, n) {
			return t
		}
	}
	return nil
}

// fill prefills the trail of drain scenarios, once per run: Config.Entries
// signed events (envelope v1, as the standalone stream's), Entries/shards
// in each shard, and returns the events' mean size.
func (r *runner) fill(ctx context.Context, t *clusterTrail) (int, error) {
	if t.filled {
		return t.size, nil
	}
	r.log.Info("prefill_started", slog.Int("entries", r.cfg.Entries), slog.String("stream", t.key("stream")), slog.Int("shards", t.shards))
	total := 0
	for k, s := range t.streams() {
		n := r.cfg.Entries / t.shards
		if k < r.cfg.Entries%t.shards {
			n++
		}
		size, err := prefill(ctx, r.cluster.rdb, r.keys, s, n)
		if err != nil {
			return 0, err
		}
		total += size * n
	}
	t.filled, t.size = true, total/max(1, r.cfg.Entries)
	return t.size, nil
}

// wantsCluster reports whether the run includes a cluster scenario.
func (r *runner) wantsCluster() bool {
	return len(r.cfg.Only) == 0 || slices.ContainsFunc(r.cfg.Only, func(n string) bool { return strings.HasPrefix(n, "cluster-") })
}

// clusterScenarios are the drain scenarios on the cluster: "verify, no
// plugins" and the default pipeline (defaults, its stream sinks renamed
// into each trail), on each trail of drain scenarios, next to the
// standalone scenarios of the same names.
func (r *runner) clusterScenarios(def config.Config, defaults []pluginFile, runArgs func(string) []string) ([]scenario, error) {
	var sinks []string
	for name, s := range def.Sinks {
		if s.Type == config.SinkStream {
			sinks = append(sinks, name)
		}
	}
	slices.Sort(sinks)
	var verify, pipelines []scenario
	for _, n := range ClusterShards {
		t := r.trail("bench", n)
		t.sinks = sinks
		env := t.env(r.cluster.url)
		verify = append(verify, scenario{name: fmt.Sprintf("cluster-verify-%d", n), title: "auditproc: verify, no plugins — " + shardsTitle(n),
			args: []string{"bench", "--child", "verify"}, trail: t, env: env, of: "verify"})
		path, err := r.writeConfig(fmt.Sprintf("cluster-default-%d", n), defaults, t.sinkConfig(def.Sinks))
		if err != nil {
			return nil, err
		}
		pipelines = append(pipelines, scenario{name: fmt.Sprintf("cluster-default-%d", n),
			title: fmt.Sprintf("auditproc: default pipeline (%d plugins) — %s", len(defaults), shardsTitle(n)),
			args:  runArgs(path), pluginCfg: path, trail: t, env: env, of: "default"})
	}
	return append(verify, pipelines...), nil
}

func shardsTitle(n int) string {
	if n == 1 {
		return "cluster, 1 shard"
	}
	return fmt.Sprintf("cluster, %d shards", n)
}
