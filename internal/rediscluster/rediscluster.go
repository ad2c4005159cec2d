// Package rediscluster forms and drives a throwaway Redis Cluster of real
// redis-server processes on 127.0.0.1: the cluster arguments of a node
// (NodeArgs), `redis-cli --cluster create` (Create), and a Cluster of the
// caller's nodes that finds masters and slot owners, moves a slot the way
// `redis-cli --cluster reshard` does (MigrateSlot), fails over and waits
// until the nodes agree (WaitHealthy).
//
// It starts no process itself: internal/redistest starts the nodes of a
// test's cluster (StartCluster), `auditproc bench` those of its cluster
// rows, and both hand them to a Cluster. It does not import testing, so
// that the auditproc binary (bench) can use it.
package rediscluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeArgs are the redis-server arguments that make a node a cluster node
// whose cluster bus listens on bus and that announces 127.0.0.1, with
// cluster-node-timeout nodeTimeout.
func NodeArgs(bus int, nodeTimeout time.Duration) []string {
	return []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(nodeTimeout / time.Millisecond)),
		"--cluster-port", strconv.Itoa(bus), "--cluster-announce-ip", "127.0.0.1",
		"--repl-diskless-sync-delay", "0"}
}

// CLI finds redis-cli on PATH.
func CLI() (string, error) {
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		return "", errors.New("rediscluster: redis-cli is not on PATH (scripts/deps.sh installs it)")
	}
	return p, nil
}

// Create joins the running cluster nodes at addrs into one cluster with
// `redis-cli --cluster create`: the first len(addrs)/(1+replicas) become
// masters sharing the 16384 slots evenly in order, the rest their
// replicas.
func Create(ctx context.Context, addrs []string, replicas int) error {
	cli, err := CLI()
	if err != nil {
		return err
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("rediscluster: redis-cli --cluster create: %w\n%s", err, out)
	}
	return nil
}

// ID is the cluster id of the node at addr (CLUSTER MYID).
func ID(ctx context.Context, addr string) (string, error) {
	cl := direct(addr)
	defer cl.Close()
	id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return "", fmt.Errorf("rediscluster: CLUSTER MYID on %s: %w", addr, err)
	}
	return id, nil
}

// Node is what a Cluster needs of one of its nodes.
type Node interface {
	comparable
	// Addr is where the node is reached directly.
	Addr() string
	// Running reports whether the node runs (a stopped node is not asked).
	Running() bool
	// ClusterID is the node's cluster id (ID).
	ClusterID() string
	// A node the other nodes reach elsewhere than at Addr also has
	// PeerAddr() string (MigrateSlot's MIGRATE target).
}

// peerAddr is where the other nodes reach n: its PeerAddr when it has one
// (a node in a container, whose Addr is a port published on the test's
// host), else its Addr.
func peerAddr[N Node](n N) string {
	if p, ok := any(n).(interface{ PeerAddr() string }); ok {
		return p.PeerAddr()
	}
	return n.Addr()
}

// Cluster is the nodes of one cluster. Its methods ask the running nodes,
// each through a one-connection client of its own.
type Cluster[N Node] struct {
	Nodes []N
}

// direct is a one-connection client straight to addr; the caller closes it.
func direct(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1})
}

// Node returns the node whose cluster id is id, or the zero N.
func (c *Cluster[N]) Node(id string) N {
	for _, n := range c.Nodes {
		if n.ClusterID() == id {
			return n
		}
	}
	var zero N
	return zero
}

func (c *Cluster[N]) has(id string) (N, bool) {
	n := c.Node(id)
	var zero N
	return n, n != zero
}

// Masters returns the nodes that are masters serving slots now, as a
// running node sees them.
func (c *Cluster[N]) Masters(ctx context.Context) ([]N, error) {
	var masters []N
	err := c.eachView(ctx, func(lines []nodeLine) {
		masters = masters[:0]
		for _, l := range lines {
			if l.master && !l.failed && len(l.slots) > 0 {
				if n, ok := c.has(l.id); ok {
					masters = append(masters, n)
				}
			}
		}
	})
	return masters, err
}

// Keyslot is the cluster slot of key (CLUSTER KEYSLOT).
func (c *Cluster[N]) Keyslot(ctx context.Context, key string) (int, error) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := direct(n.Addr())
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		_ = cl.Close()
		return int(slot), err
	}
	return 0, errors.New("rediscluster: no cluster node is running")
}

// Owner returns the master that serves slot now.
func (c *Cluster[N]) Owner(ctx context.Context, slot int) (N, error) {
	var owner N
	found := false
	err := c.eachView(ctx, func(lines []nodeLine) {
		for _, l := range lines {
			if l.master && !l.failed && l.serves(slot) {
				owner, found = c.has(l.id)
			}
		}
	})
	if err == nil && !found {
		err = fmt.Errorf("rediscluster: no master serves slot %d", slot)
	}
	return owner, err
}

// MigrateSlot moves slot from its master to master to, the way
// `redis-cli --cluster reshard` does: IMPORTING on the target, MIGRATING on
// the source, MIGRATE of the keys in batches of batch (clients see ASK
// meanwhile), then SETSLOT NODE on every master. pause, when positive, is
// slept between batches to keep the migration open longer. An empty slot
// moves at once.
func (c *Cluster[N]) MigrateSlot(ctx context.Context, slot int, to N, batch int, pause time.Duration) error {
	from, err := c.Owner(ctx, slot)
	if err != nil {
		return err
	}
	if from == to {
		return nil
	}
	if batch < 1 {
		batch = 100
	}
	src, dst := direct(from.Addr()), direct(to.Addr())
	defer src.Close()
	defer dst.Close()
	if err := dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.ClusterID()).Err(); err != nil {
		return fmt.Errorf("rediscluster: SETSLOT IMPORTING on %s: %w", to.Addr(), err)
	}
	if err := src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.ClusterID()).Err(); err != nil {
		return fmt.Errorf("rediscluster: SETSLOT MIGRATING on %s: %w", from.Addr(), err)
	}
	host, port, _ := net.SplitHostPort(peerAddr(to))
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, batch).Result()
		if err != nil {
			return fmt.Errorf("rediscluster: GETKEYSINSLOT %d: %w", slot, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 60000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("rediscluster: MIGRATE slot %d: %w", slot, err)
		}
		if pause > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
		}
	}
	// The target first, then the source, then everyone else (as redis-cli).
	masters, err := c.Masters(ctx)
	if err != nil {
		return err
	}
	order := []N{to, from}
	for _, m := range masters {
		if m != to && m != from {
			order = append(order, m)
		}
	}
	for _, m := range order {
		cl := direct(m.Addr())
		err := cl.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", to.ClusterID()).Err()
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("rediscluster: SETSLOT NODE on %s: %w", m.Addr(), err)
		}
	}
	return c.WaitHealthy(ctx)
}

// Failover promotes replica with CLUSTER FAILOVER (its master must run;
// stop the master for an unplanned failover) and waits until the cluster
// is healthy again.
func (c *Cluster[N]) Failover(ctx context.Context, replica N) error {
	cl := direct(replica.Addr())
	defer cl.Close()
	if err := cl.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		return fmt.Errorf("rediscluster: CLUSTER FAILOVER on %s: %w", replica.Addr(), err)
	}
	for {
		role, err := cl.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			return c.WaitHealthy(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rediscluster: %s not promoted: %w", replica.Addr(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ReplicaOf returns a running replica of master, or the zero N.
func (c *Cluster[N]) ReplicaOf(ctx context.Context, master N) N {
	var found N
	_ = c.eachView(ctx, func(lines []nodeLine) {
		for _, l := range lines {
			if !l.master && l.masterID == master.ClusterID() && !l.failed {
				if n, ok := c.has(l.id); ok && n.Running() {
					found = n
				}
			}
		}
	})
	return found
}

// WaitHealthy waits until every running node reports cluster_state:ok with
// all slots served by running masters, the nodes agree on who serves them,
// and every running replica's link to its master is up. After a master
// was stopped it returns once its replica was promoted.
func (c *Cluster[N]) WaitHealthy(ctx context.Context) error {
	var last string
	for {
		ok, why := c.healthy(ctx)
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("rediscluster: cluster not healthy: %s: %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster[N]) healthy(ctx context.Context) (bool, string) {
	var view string
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := direct(n.Addr())
		info, err := cl.ClusterInfo(ctx).Result()
		var repl, nodes string
		if err == nil {
			repl, err = cl.Info(ctx, "replication").Result()
		}
		if err == nil {
			nodes, err = cl.ClusterNodes(ctx).Result()
		}
		_ = cl.Close()
		if err != nil {
			return false, fmt.Sprintf("%s: %v", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return false, fmt.Sprintf("%s: cluster_state not ok", n.Addr())
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return false, fmt.Sprintf("%s: replica link down", n.Addr())
		}
		lines := parseNodes(nodes)
		for _, l := range lines {
			if l.master && len(l.slots) > 0 {
				if o, ok := c.has(l.id); ok && !o.Running() {
					return false, fmt.Sprintf("%s: slots still served by stopped node %s", n.Addr(), o.Addr())
				}
			}
		}
		// Replica relations travel by gossip: a node that already says
		// role:slave may still be listed as a bare master elsewhere.
		v := slotView(lines) + "|" + c.replicaView(lines)
		if view == "" {
			view = v
		} else if v != view {
			return false, "nodes disagree on the slot owners or the replicas"
		}
		id := n.ClusterID()
		if strings.Contains(repl, "role:slave") && !strings.Contains(v, "|"+id+">") && !strings.Contains(v, ";"+id+">") {
			return false, fmt.Sprintf("%s: not yet known as a replica", n.Addr())
		}
	}
	return true, ""
}

// eachView calls f with the CLUSTER NODES of the first running node that
// answers.
func (c *Cluster[N]) eachView(ctx context.Context, f func([]nodeLine)) error {
	var last error = errors.New("rediscluster: no cluster node is running")
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := direct(n.Addr())
		s, err := cl.ClusterNodes(ctx).Result()
		_ = cl.Close()
		if err != nil {
			last = err
			continue
		}
		f(parseNodes(s))
		return nil
	}
	return last
}

type nodeLine struct {
	id, masterID   string
	master, failed bool
	slots          [][2]int
}

func (l nodeLine) serves(slot int) bool {
	for _, r := range l.slots {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

// parseNodes reads CLUSTER NODES: id addr flags master ping pong epoch
// link slot...
func parseNodes(s string) []nodeLine {
	var out []nodeLine
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		l := nodeLine{id: f[0], masterID: f[3]}
		flags := "," + f[2] + ","
		l.master = strings.Contains(flags, ",master,")
		l.failed = strings.Contains(flags, ",fail,") || strings.Contains(flags, ",fail?,")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated or imported
			}
			lo, hi, found := strings.Cut(r, "-")
			if !found {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				l.slots = append(l.slots, [2]int{a, b})
			}
		}
		out = append(out, l)
	}
	return out
}

// replicaView lists the running, healthy replicas of a view and their
// masters, sorted.
func (c *Cluster[N]) replicaView(lines []nodeLine) string {
	var parts []string
	for _, l := range lines {
		if l.master || l.failed {
			continue
		}
		if o, ok := c.has(l.id); ok && o.Running() {
			parts = append(parts, l.id+">"+l.masterID)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ";")
}

func slotView(lines []nodeLine) string {
	var b strings.Builder
	for _, l := range lines {
		if l.master && len(l.slots) > 0 {
			fmt.Fprintf(&b, "%s:%v;", l.id, l.slots)
		}
	}
	// CLUSTER NODES lists nodes in no fixed order: compare sorted.
	parts := strings.Split(b.String(), ";")
	slices.Sort(parts)
	return strings.Join(parts, ";")
}

// A node's ports are fixed before it starts (the other nodes are told its
// bus port), so FreePort takes them from below Linux's default range of
// ephemeral ports (32768-60999): no outgoing connection takes one between
// the probe and redis-server's bind.
const freePortLow, freePortHigh = 20000, 32768

// handedOut holds the ports FreePort returned in this process: a port is
// free until its node binds it, so a second probe before then (the node's
// bus port, or the next node's) would find it free too.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a loopback port below the ephemeral range that is free
// now and that it has not returned before in this process, for a node's
// client or bus port.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	err := errors.New("every port tried was handed out already")
	for range 100 {
		port := freePortLow + rand.IntN(freePortHigh-freePortLow)
		if handedOut.ports[port] {
			continue
		}
		var l net.Listener
		if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			_ = l.Close()
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("rediscluster: find a free port below %d: %w", freePortHigh, err)
}
