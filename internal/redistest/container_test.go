package redistest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestNetworkAlias: a container started WithNetwork is reachable by its alias
// from another container on the network — here a second Redis replicating
// from "alias:6379".
func TestNetworkAlias(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nw := Network(t)
	primary := Start(t, WithNetwork(nw, "redis-primary"), WithArgs("--repl-diskless-sync-delay", "0"))
	if got, want := primary.InternalAddr(), "redis-primary:6379"; got != want {
		t.Fatalf("InternalAddr() = %q, want %q", got, want)
	}
	if primary.Backend() != Container {
		t.Fatalf("WithNetwork ran on the %v backend", primary.Backend())
	}
	if err := primary.Client(t).Set(ctx, "k", "via-alias", 0).Err(); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(primary.InternalAddr(), ":")
	replica := Start(t, WithNetwork(nw, "redis-replica"), WithArgs("--replicaof", host, port))
	rc := replica.Client(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := rc.Get(ctx, "k").Result()
		if err == nil && v == "via-alias" {
			return
		}
		if time.Now().After(deadline) {
			info, _ := rc.Info(context.Background(), "replication").Result()
			t.Fatalf("replica never got k from %s: GET = %q, %v\n%s", primary.InternalAddr(), v, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
