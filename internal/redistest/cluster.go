package redistest

import (
	"context"
	"net"
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
	opts              []Option
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
// by `redis-cli --cluster create`: three masters with one replica each by
// default, all 16384 slots assigned.
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
}

// ClusterID is the node's cluster id (ID).
func (n *ClusterNode) ClusterID() string { return n.ID }

// ClientAddr is the address cluster clients learn for the node: its link's
// with WithLinks, its own otherwise.
func (n *ClusterNode) ClientAddr() string {
	if n.Link != nil {
		return n.Link.Addr()
	}
	return n.Addr()
}

// StartCluster starts a cluster for t (process backend only: redis-server
// and redis-cli from PATH) and waits until every node reports
// cluster_state:ok and every replica is in sync. It is torn down in t's
// cleanup.
func StartCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	cc := clusterConfig{masters: 3, replicas: 1}
	for _, o := range opts {
		o(&cc)
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
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		bus, err := freePort()
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

// Options returns cluster options whose dialer bypasses the links. The
// slot map is reloaded every second while commands run: go-redis reloads
// it on MOVED and ASK only, so after a master was killed it would keep
// dialing the dead node for its default minute.
func (c *Cluster) Options() *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs:                      c.Addrs(),
		ClusterStateReloadInterval: time.Second,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			for _, n := range c.Nodes {
				if n.Link != nil && n.Link.Addr() == addr {
					addr = n.Addr()
				}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}
