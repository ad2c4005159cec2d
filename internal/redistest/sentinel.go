package redistest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name StartSentinel's sentinels monitor.
const SentinelMasterName = "auditproc"

// SentinelDownAfter is the sentinels' down-after-milliseconds: short, so a
// killed master is failed over within seconds.
const SentinelDownAfter = time.Second

// Sentinel is a master, its replica and three sentinels monitoring them
// (quorum 2), all redis-server processes on 127.0.0.1.
type Sentinel struct {
	// Servers are the data nodes, the initial master first.
	Servers   []*Server
	Sentinels []*Server
	// Link, set by StartSentinelLinked, is the relay in front of the
	// master that the sentinels monitor and name to clients.
	Link *Link
}

// StartSentinel starts the Sentinel deployment for t (process backend) and
// waits until the replica is in sync and every sentinel knows the replica
// and the other sentinels. It
// is torn down in t's cleanup.
func StartSentinel(t testing.TB, opts ...Option) *Sentinel {
	t.Helper()
	return startSentinel(t, false, SentinelDownAfter, opts...)
}

// StartSentinelLinked is StartSentinel with the master behind a Link: the
// sentinels monitor the master at the link's address, so clients that ask
// them reach it through the link, and cutting it cuts them off (the
// sentinels too, who declare the master down after downAfter: make it
// longer than the cuts for no failover). The replica replicates directly.
func StartSentinelLinked(t testing.TB, downAfter time.Duration, opts ...Option) *Sentinel {
	t.Helper()
	return startSentinel(t, true, downAfter, opts...)
}

func startSentinel(t testing.TB, linked bool, downAfter time.Duration, opts ...Option) *Sentinel {
	t.Helper()
	if _, err := redisServerPath(); err != nil {
		SkipOrFail(t, err.Error())
	}
	// No delay before a full sync (the default waits 5s for more replicas).
	fast := WithArgs("--repl-diskless-sync-delay", "0")
	master := Start(t, append([]Option{WithBackend(Process), fast}, opts...)...)
	host, port, _ := net.SplitHostPort(master.Addr())
	replica := Start(t, append([]Option{WithBackend(Process), fast, WithArgs("--replicaof", host, port)}, opts...)...)
	s := &Sentinel{Servers: []*Server{master, replica}}
	if linked {
		s.Link = NewLink(t, func() string { return master.Addr() })
		host, port, _ = net.SplitHostPort(s.Link.Addr())
	}
	conf := fmt.Sprintf("sentinel monitor %s %s %s 2\n"+
		"sentinel down-after-milliseconds %s %d\n"+
		"sentinel failover-timeout %s 10000\n"+
		"sentinel parallel-syncs %s 1\n",
		SentinelMasterName, host, port, SentinelMasterName, downAfter.Milliseconds(),
		SentinelMasterName, SentinelMasterName)
	for range 3 {
		s.Sentinels = append(s.Sentinels, Start(t, WithBackend(Process), func(c *config) { c.sentinel = conf }))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	err := waitCond(ctx, func() (bool, error) {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up"), err
	})
	_ = rc.Close()
	if err != nil {
		t.Fatalf("redistest: replica %s not in sync with its master: %v", replica.Addr(), err)
	}
	for _, sn := range s.Sentinels {
		cl := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
		err := waitCond(ctx, func() (bool, error) {
			m, err := cl.Master(ctx, SentinelMasterName).Result()
			if err != nil {
				return false, err
			}
			return m["num-slaves"] == "1" && m["num-other-sentinels"] == "2", nil
		})
		_ = cl.Close()
		if err != nil {
			t.Fatalf("redistest: sentinel %s does not see the replica and the other sentinels: %v", sn.Addr(), err)
		}
	}
	return s
}

// Addrs is the sentinels' addresses, for a client's sentinel list.
func (s *Sentinel) Addrs() []string {
	a := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		a[i] = sn.Addr()
	}
	return a
}

// Client returns a failover client (through the sentinels), closed in t's
// cleanup.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: s.Addrs()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// MasterAddr asks the sentinels which server is the master now.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, sn := range s.Sentinels {
		if !sn.Running() {
			continue
		}
		cl := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
		a, err := cl.GetMasterAddrByName(ctx, SentinelMasterName).Result()
		_ = cl.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("redistest: no sentinel names the master: %v", last)
}

// Master returns the server that is the master now.
func (s *Sentinel) Master(ctx context.Context) (*Server, error) {
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		return nil, err
	}
	for _, sv := range s.Servers {
		if sv.Addr() == addr {
			return sv, nil
		}
	}
	return nil, fmt.Errorf("redistest: the sentinels name %s, which is none of the servers", addr)
}

// WaitFailover waits until the sentinels name a master other than old and
// that server answers as a master.
func (s *Sentinel) WaitFailover(ctx context.Context, old string) (*Server, error) {
	var promoted *Server
	err := waitCond(ctx, func() (bool, error) {
		m, err := s.Master(ctx)
		if err != nil || m.Addr() == old {
			return false, err
		}
		cl := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
		defer cl.Close()
		role, err := cl.Do(ctx, "ROLE").Slice()
		if err != nil || len(role) == 0 || role[0] != "master" {
			return false, err
		}
		promoted = m
		return true, nil
	})
	return promoted, err
}

// Failover asks a sentinel for a failover (SENTINEL FAILOVER) and waits
// until it is done.
func (s *Sentinel) Failover(ctx context.Context) (*Server, error) {
	old, err := s.MasterAddr(ctx)
	if err != nil {
		return nil, err
	}
	cl := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr()})
	err = cl.Failover(ctx, SentinelMasterName).Err()
	_ = cl.Close()
	if err != nil {
		return nil, fmt.Errorf("redistest: SENTINEL FAILOVER: %w", err)
	}
	return s.WaitFailover(ctx, old)
}

// waitCond polls cond every 50ms until it is true or ctx ends (returning
// cond's last error, if any, with ctx's).
func waitCond(ctx context.Context, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
