package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the cluster-node-timeout of StartCluster's nodes:
// short, so that a killed master's replica is promoted within seconds.
const ClusterNodeTimeout = 2 * time.Second

// ClusterOption configures StartCluster.
type ClusterOption func(*clusterConfig)

type clusterConfig struct {
	masters, replicas int
	links             bool
	network           string // WithContainers
	opts              []Option
}

// WithContainers makes every node a container (Container backend) on the
// Docker network name, made by Network(t, WithFixedAddresses()): node i
// has the fixed address i of the network (ClientAddr, what it announces
// to cluster clients and to the other nodes) and the alias redis-<i+1>.
// Containers on that network (auditproc replicas) reach the nodes as
// cluster clients do; the test's own clients (Client, Options) reach each
// through its published port on 127.0.0.1. A node cut off the network
// (Disconnect) comes back at its address (Connect).
func WithContainers(network string) ClusterOption {
	return func(c *clusterConfig) { c.network = network }
}

// WithLinks puts a Link in front of every node, and makes the node announce
// the link's port to cluster clients, so a test can cut a client off one
// node (Link.Cut) while the cluster bus and the test's own client (Client)
// keep working.
func WithLinks() ClusterOption { return func(c *clusterConfig) { c.links = true } }

// WithNodeOptions passes options to every node (WithAppendFsync, WithArgs).
func WithNodeOptions(opts ...Option) ClusterOption {
	return func(c *clusterConfig) { c.opts = append(c.opts, opts...) }
}

// WithShape sets how many masters, and replicas per master, the cluster
// has (default 3 and 1).
func WithShape(masters, replicasPerMaster int) ClusterOption {
	return func(c *clusterConfig) { c.masters, c.replicas = masters, replicasPerMaster }
}

// Cluster is a Redis Cluster of redis-server processes on 127.0.0.1, made
// by `redis-cli --cluster create`, or of containers on a Docker network
// (WithContainers): three masters with one replica each by default, all
// 16384 slots assigned.
type Cluster struct {
	t     testing.TB
	Nodes []*ClusterNode // in creation order: masters first (roles change on failover)
}

// ClusterNode is one node of a Cluster.
type ClusterNode struct {
	*Server
	// Link is in front of the node when the cluster was started WithLinks.
	Link *Link
	// ID is the node's cluster id.
	ID string

	ip netip.Addr // WithContainers: the node's fixed address on the network
}

// ClientAddr is the address cluster clients learn for the node: its link's
// with WithLinks, its fixed address on the network WithContainers, its own
// otherwise.
func (n *ClusterNode) ClientAddr() string {
	switch {
	case n.Link != nil:
		return n.Link.Addr()
	case n.ip.IsValid():
		return n.peerAddr()
	}
	return n.Addr()
}

// peerAddr is where the other nodes reach the node (MIGRATE's target).
func (n *ClusterNode) peerAddr() string {
	if n.ip.IsValid() {
		return net.JoinHostPort(n.ip.String(), strconv.Itoa(InternalPort))
	}
	return n.Addr()
}

// StartCluster starts a cluster for t (redis-server and redis-cli from
// PATH, or containers WithContainers) and waits until every node reports
// cluster_state:ok and every replica is in sync. It is torn down in t's
// cleanup.
func StartCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	cc := clusterConfig{masters: 3, replicas: 1}
	for _, o := range opts {
		o(&cc)
	}
	if cc.network != "" {
		return startContainerCluster(t, cc)
	}
	if _, err := redisServerPath(); err != nil {
		SkipOrFail(t, err.Error())
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		SkipOrFail(t, "redistest: redis-cli is not on PATH (scripts/deps.sh installs it)")
	}
	c := &Cluster{t: t}
	n := cc.masters * (1 + cc.replicas)
	for i := 0; i < n; i++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		bus, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
			"--cluster-port", strconv.Itoa(bus), "--cluster-announce-ip", "127.0.0.1",
			"--repl-diskless-sync-delay", "0"}
		node := &ClusterNode{}
		if cc.links {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			node.Link = NewLink(t, func() string { return addr })
			args = append(args, "--cluster-announce-port", strconv.Itoa(node.Link.Port()),
				"--cluster-announce-bus-port", strconv.Itoa(bus))
		}
		o := append([]Option{WithBackend(Process), WithArgs(args...), func(c *config) { c.port = port }}, cc.opts...)
		node.Server = Start(t, o...)
		c.Nodes = append(c.Nodes, node)
	}
	addrs := make([]string, n)
	for i, node := range c.Nodes {
		addrs[i] = node.ClientAddr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(cc.replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, node := range c.Nodes {
		id, err := node.direct().Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("redistest: CLUSTER MYID on %s: %v", node.Addr(), err)
		}
		node.ID = id
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// startContainerCluster is StartCluster WithContainers. redis-cli --cluster
// create would have to reach the nodes at the addresses they announce, which
// the test host may not: the nodes are joined with the same commands from
// here, through their published ports (CLUSTER MEET, ADDSLOTSRANGE,
// REPLICATE).
func startContainerCluster(t testing.TB, cc clusterConfig) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &Cluster{t: t}
	n := cc.masters * (1 + cc.replicas)
	opts := make([][]Option, n)
	ips := make([]netip.Addr, n)
	for i := range n {
		ip, err := fixedAddress(ctx, cc.network, i)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
			"--cluster-announce-ip", ip.String(), "--repl-diskless-sync-delay", "0"}
		opts[i] = append([]Option{WithNetwork(cc.network, fmt.Sprintf("redis-%d", i+1)), WithArgs(args...),
			func(c *config) { c.ip = ip }}, cc.opts...)
		ips[i] = ip
	}
	for i, s := range startAll(t, opts) {
		c.Nodes = append(c.Nodes, &ClusterNode{Server: s, ip: ips[i]})
	}
	if err := c.join(ctx, cc.masters); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// join makes one cluster of fresh nodes: the first masters nodes share the
// slots, the others replicate them in turn.
func (c *Cluster) join(ctx context.Context, masters int) error {
	for _, node := range c.Nodes {
		cl := node.direct()
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("redistest: CLUSTER MYID on %s: %w", node.Addr(), err)
		}
		node.ID = id
	}
	first := c.Nodes[0].direct()
	defer first.Close()
	for _, node := range c.Nodes[1:] {
		if err := first.ClusterMeet(ctx, node.ip.String(), strconv.Itoa(InternalPort)).Err(); err != nil {
			return fmt.Errorf("redistest: CLUSTER MEET %s: %w", node.peerAddr(), err)
		}
	}
	for i, node := range c.Nodes[:masters] {
		lo, hi := i*16384/masters, (i+1)*16384/masters-1
		cl := node.direct()
		err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err()
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("redistest: CLUSTER ADDSLOTSRANGE %d %d on %s: %w", lo, hi, node.Addr(), err)
		}
	}
	// A node can replicate a master only once it knows it.
	for i, node := range c.Nodes[masters:] {
		master := c.Nodes[i%masters]
		cl := node.direct()
		err := waitCond(ctx, func() (bool, error) {
			err := cl.Do(ctx, "CLUSTER", "REPLICATE", master.ID).Err()
			return err == nil, err
		})
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("redistest: CLUSTER REPLICATE %s on %s: %w", master.ID, node.Addr(), err)
		}
	}
	return nil
}

// direct is a one-connection client straight to the node (not through its
// link); the caller closes it.
func (n *ClusterNode) direct() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), PoolSize: 1, MaxRetries: -1})
}

// Addrs is the seed list cluster clients are given (links' addresses with
// WithLinks).
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.ClientAddr()
	}
	return a
}

// Client returns a cluster client that reaches the nodes directly, never
// through their links (it keeps working while a test cuts a link); it is
// closed in t's cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cl := redis.NewClusterClient(c.Options())
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// Options returns cluster options whose dialer bypasses the links (and
// reaches container nodes through their published ports). The
// slot map is reloaded every second while commands run: go-redis reloads
// it on MOVED and ASK only, so after a master was killed it would keep
// dialing the dead node for its default minute.
func (c *Cluster) Options() *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs:                      c.Addrs(),
		ClusterStateReloadInterval: time.Second,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			for _, n := range c.Nodes {
				if n.ClientAddr() == addr {
					if addr = n.Addr(); addr == "" {
						return nil, fmt.Errorf("redistest: node %s is stopped or cut off", n.ClientAddr())
					}
					break
				}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// Node returns the node whose cluster id is id, or nil.
func (c *Cluster) Node(id string) *ClusterNode {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Masters returns the nodes that are masters serving slots now, as a
// running node sees them.
func (c *Cluster) Masters(ctx context.Context) ([]*ClusterNode, error) {
	var masters []*ClusterNode
	err := c.eachView(ctx, func(lines []nodeLine) {
		masters = masters[:0]
		for _, l := range lines {
			if l.master && !l.failed && len(l.slots) > 0 {
				if n := c.Node(l.id); n != nil {
					masters = append(masters, n)
				}
			}
		}
	})
	return masters, err
}

// Keyslot is the cluster slot of key (CLUSTER KEYSLOT).
func (c *Cluster) Keyslot(ctx context.Context, key string) (int, error) {
	for _, n := range c.Nodes {
		if !n.Reachable() {
			continue
		}
		cl := n.direct()
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		_ = cl.Close()
		return int(slot), err
	}
	return 0, errors.New("redistest: no cluster node is running")
}

// Owner returns the master that serves slot now.
func (c *Cluster) Owner(ctx context.Context, slot int) (*ClusterNode, error) {
	var owner *ClusterNode
	err := c.eachView(ctx, func(lines []nodeLine) {
		for _, l := range lines {
			if l.master && !l.failed && l.serves(slot) {
				owner = c.Node(l.id)
			}
		}
	})
	if err == nil && owner == nil {
		err = fmt.Errorf("redistest: no master serves slot %d", slot)
	}
	return owner, err
}

// MigrateSlot moves slot from its master to master to, the way
// `redis-cli --cluster reshard` does: IMPORTING on the target, MIGRATING on
// the source, MIGRATE of the keys in batches of batch (clients see ASK
// meanwhile), then SETSLOT NODE on every master. pause, when positive, is
// slept between batches to keep the migration open longer.
func (c *Cluster) MigrateSlot(ctx context.Context, slot int, to *ClusterNode, batch int, pause time.Duration) error {
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
	src, dst := from.direct(), to.direct()
	defer src.Close()
	defer dst.Close()
	if err := dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.ID).Err(); err != nil {
		return fmt.Errorf("redistest: SETSLOT IMPORTING on %s: %w", to.Addr(), err)
	}
	if err := src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.ID).Err(); err != nil {
		return fmt.Errorf("redistest: SETSLOT MIGRATING on %s: %w", from.Addr(), err)
	}
	host, port, _ := net.SplitHostPort(to.peerAddr())
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, batch).Result()
		if err != nil {
			return fmt.Errorf("redistest: GETKEYSINSLOT %d: %w", slot, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 60000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("redistest: MIGRATE slot %d: %w", slot, err)
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
	order := []*ClusterNode{to, from}
	for _, m := range masters {
		if m != to && m != from {
			order = append(order, m)
		}
	}
	for _, m := range order {
		cl := m.direct()
		err := cl.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", to.ID).Err()
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("redistest: SETSLOT NODE on %s: %w", m.Addr(), err)
		}
	}
	return c.WaitHealthy(ctx)
}

// Failover promotes replica with CLUSTER FAILOVER (its master must run;
// use Kill on the master for an unplanned failover) and waits until the
// cluster is healthy again.
func (c *Cluster) Failover(ctx context.Context, replica *ClusterNode) error {
	cl := replica.direct()
	defer cl.Close()
	if err := cl.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		return fmt.Errorf("redistest: CLUSTER FAILOVER on %s: %w", replica.Addr(), err)
	}
	for {
		role, err := cl.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			return c.WaitHealthy(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: %s not promoted: %w", replica.Addr(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ReplicaOf returns a running replica of master, or nil.
func (c *Cluster) ReplicaOf(ctx context.Context, master *ClusterNode) *ClusterNode {
	var found *ClusterNode
	_ = c.eachView(ctx, func(lines []nodeLine) {
		for _, l := range lines {
			if !l.master && l.masterID == master.ID && !l.failed {
				if n := c.Node(l.id); n != nil && n.Reachable() {
					found = n
				}
			}
		}
	})
	return found
}

// WaitHealthy waits until every running node reports cluster_state:ok with
// all slots served by running masters, the nodes agree on who serves them,
// and every running replica's link to its master is up. After a Kill of a
// master it returns once its replica was promoted.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	var last string
	for {
		ok, why := c.healthy(ctx)
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: cluster not healthy: %s: %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) healthy(ctx context.Context) (bool, string) {
	var view string
	for _, n := range c.Nodes {
		if !n.Reachable() {
			continue
		}
		cl := n.direct()
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
				if o := c.Node(l.id); o != nil && !o.Reachable() {
					return false, fmt.Sprintf("%s: slots still served by stopped or cut-off node %s", n.Addr(), o.Addr())
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
		if strings.Contains(repl, "role:slave") && !strings.Contains(v, "|"+n.ID+">") && !strings.Contains(v, ";"+n.ID+">") {
			return false, fmt.Sprintf("%s: not yet known as a replica", n.Addr())
		}
	}
	return true, ""
}

// eachView calls f with the CLUSTER NODES of the first running node that
// answers.
func (c *Cluster) eachView(ctx context.Context, f func([]nodeLine)) error {
	var last error = errors.New("redistest: no cluster node is running")
	for _, n := range c.Nodes {
		if !n.Reachable() {
			continue
		}
		cl := n.direct()
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
func (c *Cluster) replicaView(lines []nodeLine) string {
	var parts []string
	for _, l := range lines {
		if l.master || l.failed {
			continue
		}
		if o := c.Node(l.id); o != nil && o.Reachable() {
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
