package redistest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartReplica starts a replica of master (both on the process backend:
// start master WithBackend(Process)) and waits until it is in sync, so
// that a test can count on it in a WAIT. Pause it (Pause, SIGSTOP) to make
// the master's writes go unacknowledged while the link stays up; Kill it
// to drop the link. It is torn down in t's cleanup.
func StartReplica(t testing.TB, master *Server, opts ...Option) *Server {
	t.Helper()
	return StartReplicaVia(t, master, master.Addr(), opts...)
}

// StartReplicaVia is StartReplica with the replica dialing its master at
// addr: a Link in front of master (NewLink), so that a test can cut the
// replication link like a network partition, the replica then keeping what
// it had received.
func StartReplicaVia(t testing.TB, master *Server, addr string, opts ...Option) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer func() { _ = mc.Close() }()
	// No delay before the full sync (the default waits 5s for more
	// replicas to share it).
	if err := mc.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("redistest: CONFIG SET on master %s: %v", master.Addr(), err)
	}
	host, port, _ := net.SplitHostPort(addr)
	replica := Start(t, append([]Option{WithBackend(Process), WithArgs("--replicaof", host, port)}, opts...)...)
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer func() { _ = rc.Close() }()
	err := waitCond(ctx, func() (bool, error) {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up"), err
	})
	if err == nil {
		// The master counts a replica in WAIT only once it is online on
		// its side too (after a diskless sync, at the replica's first
		// acknowledgement), and the first writes after the sync can take
		// a second to be acknowledged: wait until a write is acknowledged
		// promptly, so that a test's own short WAIT means what it says.
		const probe = "redistest:replica-sync"
		err = waitCond(ctx, func() (bool, error) {
			if err := mc.Set(ctx, probe, time.Now().UnixNano(), 0).Err(); err != nil {
				return false, err
			}
			n, err := mc.Do(ctx, "WAIT", 1, 100).Int()
			return err == nil && n >= 1, err
		})
		if err == nil {
			err = mc.Del(ctx, probe).Err()
		}
	}
	if err != nil {
		t.Fatalf("redistest: replica %s not in sync with master %s: %v", replica.Addr(), master.Addr(), err)
	}
	return replica
}
