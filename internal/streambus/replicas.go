package streambus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMinReplicasTimeout is how long a write waits for its replicas when
// Config.MinReplicasTimeout is zero.
const DefaultMinReplicasTimeout = time.Second

// ErrNotReplicated: the master took a write, but fewer replicas than
// Config.MinReplicasAcked confirmed it within Config.MinReplicasTimeout. The
// write is on the master; a failover now may lose it. Errors wrapping it
// are *NotReplicatedError.
var ErrNotReplicated = errors.New("streambus: not replicated")

// NotReplicatedError says which write went unconfirmed and how far it got.
type NotReplicatedError struct {
	// Key is the key whose master took the write (the stream).
	Key string
	// Replicas is how many replicas confirmed it; Want how many were asked
	// for.
	Replicas, Want int
	// Timeout is how long Redis waited for them.
	Timeout time.Duration
}

func (e *NotReplicatedError) Error() string {
	return fmt.Sprintf("%v: the master of %q took the write, but only %d of %d replicas confirmed it within %s: a failover now may lose it",
		ErrNotReplicated, e.Key, e.Replicas, e.Want, e.Timeout)
}

// Unwrap returns ErrNotReplicated.
func (e *NotReplicatedError) Unwrap() error { return ErrNotReplicated }

// waits says whether the Bus waits for replicas after its writes.
func (b *Bus) waits() bool { return b.cfg.MinReplicasAcked > 0 }

// checkWaitClient refuses a client on which a WAIT cannot follow the
// write on the same connection, or whose reads give up before the wait
// does (a pipeline's replies share the client's read timeout).
func (c Config) checkWaitClient(rdb redis.UniversalClient) error {
	if c.MinReplicasAcked == 0 {
		return nil
	}
	rt, ok := readTimeout(rdb)
	if !ok {
		return fmt.Errorf("%w: waiting for replicas needs a *redis.Client or *redis.ClusterClient, not %T", ErrInvalidArgs, rdb)
	}
	if rt > 0 && c.MinReplicasTimeout >= rt {
		return fmt.Errorf("%w: the replicas' wait of %s must be shorter than the client's read timeout of %s", ErrInvalidArgs, c.MinReplicasTimeout, rt)
	}
	return nil
}

// waitToken is the commit key token of a commit with no chained add when
// the Bus waits for replicas: random, so that every run of a commit writes
// its key (see commitArgs), "" otherwise.
func (b *Bus) waitToken() string {
	if !b.waits() {
		return ""
	}
	var r [16]byte
	_, _ = rand.Read(r[:])
	return "w" + hex.EncodeToString(r[:])
}

// maxRedirects bounds the tries of a replicated write that a cluster node
// redirects (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY: nothing ran), as
// the client's own MaxRedirects does for other commands.
const maxRedirects = 8

// replicated sends the commands send queues, then WAIT, pipelined on one
// connection to the master that holds key. WAIT counts the replicas that
// acknowledged everything this connection wrote (its own replication
// offset), so it must follow the writes on their connection: a
// *redis.Client (a server, or Sentinel's master) runs a pipeline on one
// connection; in Redis Cluster the pipeline goes to the node client of
// key's master, since the cluster client would send a keyless WAIT to any
// node. A node that redirects the write (resharding, failover) makes the
// cluster client reload its slots, and the pipeline is sent again.
//
// The writes' outcomes are in the commands send queued, unless the master
// could not be found: then send was not called (its commands are nil) and
// the error says why. Otherwise the error says
// whether they were confirmed: nil when MinReplicasAcked replicas hold
// them, a *NotReplicatedError when fewer did within MinReplicasTimeout,
// the WAIT's own error otherwise (a lost connection, which the commands
// share). Every write sent this way must write something each time it
// runs, a rerun that finds its work done included (a key's expiry
// refreshed will do): a connection that wrote nothing waits only for its
// own earlier writes, and would not cover a first run's made elsewhere.
func (b *Bus) replicated(ctx context.Context, key string, send func(redis.Pipeliner)) error {
	backoff := 10 * time.Millisecond
	for try := 1; ; try++ {
		node, err := b.master(ctx, key)
		if err != nil {
			return err
		}
		pipe := node.Pipeline()
		send(pipe)
		// WAIT 0 would wait forever: never less than a millisecond.
		wait := redis.NewIntCmd(ctx, "wait", b.cfg.MinReplicasAcked, max(b.cfg.MinReplicasTimeout.Milliseconds(), 1))
		_ = pipe.Process(ctx, wait)
		_, err = pipe.Exec(ctx)
		if cc, ok := b.rdb.(*redis.ClusterClient); ok && redirected(err) && try < maxRedirects {
			cc.ReloadState(ctx)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 500*time.Millisecond)
			continue
		}
		if err := wait.Err(); err != nil {
			return fmt.Errorf("wait for %d replicas of %q: %w", b.cfg.MinReplicasAcked, key, err)
		}
		if n := int(wait.Val()); n < b.cfg.MinReplicasAcked {
			return &NotReplicatedError{Key: key, Replicas: n, Want: b.cfg.MinReplicasAcked, Timeout: b.cfg.MinReplicasTimeout}
		}
		return nil
	}
}

// master is the client whose pipelines reach key's master on one
// connection.
func (b *Bus) master(ctx context.Context, key string) (*redis.Client, error) {
	switch c := b.rdb.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("find the master of %q: %w", key, err)
		}
		return node, nil
	}
	return nil, fmt.Errorf("%w: waiting for replicas needs a *redis.Client or *redis.ClusterClient, not %T", ErrInvalidArgs, b.rdb)
}

// redirected: a cluster node refused the write without running it because
// another node serves its slot now, or the slot is moving.
func redirected(err error) bool {
	if err == nil {
		return false
	}
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || redis.IsTryAgainError(err) || redis.IsClusterDownError(err) || redis.IsReadOnlyError(err)
}

// runScript runs script as script.Run does (EVALSHA, then EVAL when Redis
// does not have it), followed by WAIT when the Bus waits for replicas. The
// script's outcome is in the command; the error is replicated's (nil when
// the Bus does not wait).
func (b *Bus) runScript(ctx context.Context, script *redis.Script, keys []string, args ...any) (*redis.Cmd, error) {
	if !b.waits() {
		return script.Run(ctx, b.rdb, keys, args...), nil
	}
	var cmd *redis.Cmd
	werr := b.replicated(ctx, keys[0], func(p redis.Pipeliner) { cmd = script.EvalSha(ctx, p, keys, args...) })
	if cmd != nil && isNoScript(cmd.Err()) {
		// Nothing ran: once more with the script's text, which loads it.
		cmd = nil
		werr = b.replicated(ctx, keys[0], func(p redis.Pipeliner) { cmd = script.Eval(ctx, p, keys, args...) })
	}
	if cmd == nil {
		cmd = failedCmd(ctx, werr)
	}
	return cmd, werr
}

// failedCmd is a command that was never sent, failed with err.
func failedCmd(ctx context.Context, err error) *redis.Cmd {
	c := redis.NewCmd(ctx)
	c.SetErr(err)
	return c
}
