package redistest

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartClusterMigratesSlotsAndFailsOver(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	c := StartCluster(t, WithLinks())
	require.Len(t, c.Nodes, 6)
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)

	// Through the links, as a client of the announced addresses.
	through := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer through.Close()
	direct := c.Client(t)
	for _, k := range []string{"{a}x", "{b}x", "{c}x"} {
		require.NoError(t, through.Set(ctx, k, "1", 0).Err())
	}
	slot, err := c.Keyslot(ctx, "{a}x")
	require.NoError(t, err)
	from, err := c.Owner(ctx, slot)
	require.NoError(t, err)
	var to *ClusterNode
	for _, m := range masters {
		if m != from {
			to = m
		}
	}
	for i := range 250 {
		require.NoError(t, direct.Set(ctx, "{a}"+string(rune('a'+i%26))+time.Now().String(), "v", 0).Err())
	}
	require.NoError(t, c.MigrateSlot(ctx, slot, to, 50, 0))
	owner, err := c.Owner(ctx, slot)
	require.NoError(t, err)
	assert.Equal(t, to, owner)
	v, err := through.Get(ctx, "{a}x").Result()
	require.NoError(t, err)
	assert.Equal(t, "1", v)

	// Unplanned failover: kill the master of {b}; its replica takes over.
	slot, err = c.Keyslot(ctx, "{b}x")
	require.NoError(t, err)
	m, err := c.Owner(ctx, slot)
	require.NoError(t, err)
	r := c.ReplicaOf(ctx, m)
	require.NotNil(t, r)
	require.NoError(t, m.Kill(ctx))
	require.NoError(t, c.WaitHealthy(ctx))
	owner, err = c.Owner(ctx, slot)
	require.NoError(t, err)
	assert.Equal(t, r, owner, "the replica was promoted")
	// The client learns the new owner on its next errors.
	require.Eventually(t, func() bool { return direct.Get(ctx, "{b}x").Val() == "1" }, 30*time.Second, 100*time.Millisecond)
}

func TestStartSentinelFailsOver(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := StartSentinel(t)
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	old, err := s.Master(ctx)
	require.NoError(t, err)
	require.Equal(t, s.Servers[0], old)
	require.NoError(t, c.Wait(ctx, 1, 5*time.Second).Err())
	require.NoError(t, old.Kill(ctx))
	m, err := s.WaitFailover(ctx, old.Addr())
	require.NoError(t, err)
	assert.Equal(t, s.Servers[1], m)
	require.Eventually(t, func() bool { return c.Get(ctx, "k").Val() == "v" }, 30*time.Second, 100*time.Millisecond)
}

func TestLinkCutSilencesOpenConnectionsForGood(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	l := NewLink(t, s.Addr)
	conn, err := net.Dial("tcp", l.Addr())
	require.NoError(t, err)
	defer conn.Close()
	rd := bufio.NewReader(conn)
	ping := func(c net.Conn, rd *bufio.Reader) error {
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := rd.ReadString('\n')
		if err == nil && line != "+PONG\r\n" {
			t.Fatalf("got %q", line)
		}
		return err
	}
	require.NoError(t, ping(conn, rd))
	l.Cut()
	assert.Error(t, ping(conn, rd), "no answer while cut")
	fresh, err := net.Dial("tcp", l.Addr())
	require.NoError(t, err)
	defer fresh.Close()
	frd := bufio.NewReader(fresh)
	assert.Error(t, ping(fresh, frd), "a connection made while cut waits")
	l.Restore()
	assert.Error(t, ping(conn, rd), "a connection open at the cut stays silent")
	// The connection made during the cut goes through now (its PING was
	// held and is answered first).
	_ = fresh.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := frd.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", line)
	again, err := net.Dial("tcp", l.Addr())
	require.NoError(t, err)
	defer again.Close()
	require.NoError(t, ping(again, bufio.NewReader(again)))
}

// TestContainerClusterFailsOverOnACut runs the cluster as containers
// (WithContainers): the test reaches every node through its published port,
// a slot moves, and a master cut off the network (Disconnect) for longer
// than the node timeout is failed over; once connected again, at its own
// address, it rejoins as a replica.
func TestContainerClusterFailsOverOnACut(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nw := Network(t, WithFixedAddresses())
	c := StartCluster(t, WithContainers(nw))
	require.Len(t, c.Nodes, 6)
	rdb := c.Client(t)
	for _, k := range []string{"{a}x", "{b}x", "{c}x"} {
		require.NoError(t, rdb.Set(ctx, k, "1", 0).Err())
	}
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)
	slot, err := c.Keyslot(ctx, "{a}x")
	require.NoError(t, err)
	from, err := c.Owner(ctx, slot)
	require.NoError(t, err)
	to := masters[0]
	if to == from {
		to = masters[1]
	}
	require.NoError(t, c.MigrateSlot(ctx, slot, to, 1, 0))
	require.Equal(t, "1", rdb.Get(ctx, "{a}x").Val())

	slot, err = c.Keyslot(ctx, "{b}x")
	require.NoError(t, err)
	m, err := c.Owner(ctx, slot)
	require.NoError(t, err)
	r := c.ReplicaOf(ctx, m)
	require.NotNil(t, r)
	require.NoError(t, m.Disconnect(ctx))
	assert.False(t, m.Reachable())
	require.NoError(t, c.WaitHealthy(ctx))
	owner, err := c.Owner(ctx, slot)
	require.NoError(t, err)
	assert.Equal(t, r, owner, "the replica was promoted")
	require.Eventually(t, func() bool { return rdb.Get(ctx, "{b}x").Val() == "1" }, 30*time.Second, 100*time.Millisecond)

	require.NoError(t, m.Connect(ctx))
	require.NoError(t, c.WaitHealthy(ctx))
	assert.Equal(t, m, c.ReplicaOf(ctx, r), "the old master rejoined as a replica of the new one")
}
