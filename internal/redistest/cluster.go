package redistest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/rediscluster"
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
//
// Its Nodes are in creation order, masters first (roles change on
// failover); the methods that find masters and slot owners, move a slot,
// fail over and wait for the cluster to settle are rediscluster's.
type Cluster struct {
	rediscluster.Cluster[*ClusterNode]
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

// ClusterID is the node's cluster id (ID).
func (n *ClusterNode) ClusterID() string { return n.ID }

// Running reports whether the node runs and can be asked: a container cut
// off its network (Disconnect) counts as down, for the cluster's helpers
// (WaitHealthy, Owner, ReplicaOf...) as for its peers.
func (n *ClusterNode) Running() bool { return n.Reachable() }

// ClientAddr is the address cluster clients learn for the node: its link's
// with WithLinks, its fixed address on the network WithContainers, its own
// otherwise.
func (n *ClusterNode) ClientAddr() string {
	switch {
	case n.Link != nil:
		return n.Link.Addr()
	case n.ip.IsValid():
		return n.PeerAddr()
	}
	return n.Addr()
}

// PeerAddr is where the other nodes reach the node (the target of
// MigrateSlot's MIGRATE): its fixed address WithContainers, Addr otherwise.
func (n *ClusterNode) PeerAddr() string {
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
	if _, err := rediscluster.CLI(); err != nil {
		SkipOrFail(t, err.Error())
	}
	c := &Cluster{}
	n := cc.masters * (1 + cc.replicas)
	for i := 0; i < n; i++ {
		port, err := rediscluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		bus, err := rediscluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		args := rediscluster.NodeArgs(bus, ClusterNodeTimeout)
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
	if err := rediscluster.Create(ctx, addrs, cc.replicas); err != nil {
		t.Fatal(err)
	}
	for _, node := range c.Nodes {
		id, err := rediscluster.ID(ctx, node.Addr())
		if err != nil {
			t.Fatal(err)
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
	n := cc.masters * (1 + cc.replicas)
	opts := make([][]Option, n)
	ips := make([]netip.Addr, n)
	for i := range n {
		ip, err := fixedAddress(ctx, cc.network, i)
		if err != nil {
			t.Fatal(err)
		}
		// rediscluster.NodeArgs but for the address the node announces; the
		// bus port is the default (port + 10000).
		args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
			"--cluster-announce-ip", ip.String(), "--repl-diskless-sync-delay", "0"}
		opts[i] = append([]Option{WithNetwork(cc.network, fmt.Sprintf("redis-%d", i+1)), WithArgs(args...),
			func(c *config) { c.ip = ip }}, cc.opts...)
		ips[i] = ip
	}
	c := &Cluster{}
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

// join makes one cluster of fresh container nodes: the first masters nodes
// share the slots, the others replicate them in turn.
func (c *Cluster) join(ctx context.Context, masters int) error {
	for _, node := range c.Nodes {
		id, err := rediscluster.ID(ctx, node.Addr())
		if err != nil {
			return err
		}
		node.ID = id
	}
	first := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr(), PoolSize: 1, MaxRetries: -1})
	defer first.Close()
	for _, node := range c.Nodes[1:] {
		if err := first.ClusterMeet(ctx, node.ip.String(), strconv.Itoa(InternalPort)).Err(); err != nil {
			return fmt.Errorf("redistest: CLUSTER MEET %s: %w", node.PeerAddr(), err)
		}
	}
	for i, node := range c.Nodes[:masters] {
		lo, hi := i*16384/masters, (i+1)*16384/masters-1
		cl := redis.NewClient(&redis.Options{Addr: node.Addr(), PoolSize: 1, MaxRetries: -1})
		err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err()
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("redistest: CLUSTER ADDSLOTSRANGE %d %d on %s: %w", lo, hi, node.Addr(), err)
		}
	}
	// A node can replicate a master only once it knows it.
	for i, node := range c.Nodes[masters:] {
		master := c.Nodes[i%masters]
		cl := redis.NewClient(&redis.Options{Addr: node.Addr(), PoolSize: 1, MaxRetries: -1})
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
