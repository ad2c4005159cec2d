package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/redistest"
)

// failover is a master and a replica that replicates through a Link, so
// that a test can cut replication like a partition, kill the master and
// promote the replica, as a failover does.
type failover struct {
	master, replica *redistest.Server
	link            *redistest.Link
	stream          string
}

func newFailover(t *testing.T) *failover {
	t.Helper()
	master := redistest.Start(t, redistest.WithBackend(redistest.Process))
	link := redistest.NewLink(t, master.Addr)
	replica := redistest.StartReplicaVia(t, master, link.Addr())
	return &failover{master: master, replica: replica, link: link, stream: fmt.Sprintf("{fo}:stream:%d", time.Now().UnixNano())}
}

// bus is a producer on the master that waits for r replicas.
func (f *failover) bus(t *testing.T, r int) *audit.Bus {
	t.Helper()
	key, err := audit.GenerateKey()
	require.NoError(t, err)
	keys, err := audit.NewKeyring("k", map[string][]byte{"k": key})
	require.NoError(t, err)
	bus, err := audit.New(audit.Config{RedisURL: f.master.URL(), Keys: keys, Stream: f.stream,
		WriteTimeout: time.Second, MinReplicasAcked: r, MinReplicasTimeout: 200 * time.Millisecond}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Close() })
	return bus
}

// promote kills the master and makes the replica the master, as Sentinel
// or Redis Cluster does when the master dies, and returns the event ids
// the new master holds.
func (f *failover) promote(t *testing.T) map[string]bool {
	t.Helper()
	ctx := context.Background()
	if f.master.Running() {
		require.NoError(t, f.master.Kill(ctx))
	}
	rc := f.replica.Client(t)
	require.NoError(t, rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	msgs, err := rc.XRange(ctx, f.stream, "-", "+").Result()
	require.NoError(t, err)
	held := map[string]bool{}
	for _, m := range msgs {
		var ev struct {
			EventID string `json:"event_id"`
		}
		if s, ok := m.Values["event"].(string); ok && json.Unmarshal([]byte(s), &ev) == nil {
			held[ev.EventID] = true
		}
	}
	return held
}

// confirmed is what a producer was told about its events.
type confirmed struct {
	mu            sync.Mutex
	ok            []string // event ids Audit returned without error
	notReplicated int      // ErrNotReplicated: the producer knows
	other         int      // any other error
}

func (c *confirmed) audit(ctx context.Context, bus *audit.Bus, i int) {
	id := fmt.Sprintf("ev-%d", i)
	_, err := bus.Audit(ctx, map[string]any{"event_id": id, "n": i, "action": "read"})
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.ok = append(c.ok, id)
	case errors.Is(err, audit.ErrNotReplicated):
		c.notReplicated++
	default:
		c.other++
	}
}

// lost counts the event ids a producer was told were written that the new
// master does not hold.
func (c *confirmed) lost(held map[string]bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range c.ok {
		if !held[id] {
			n++
		}
	}
	return n
}

// TestMasterKillAfterPartition: the replica is cut off, the producer goes
// on writing, the master dies and the replica takes over. Without
// min_replicas_acked every event written during the cut (and any the
// replica had not received yet when the cut came) was confirmed to the
// producer and is lost; with it, none is confirmed: each gets
// ErrNotReplicated, and nothing confirmed is lost.
func TestMasterKillAfterPartition(t *testing.T) {
	const before, during = 50, 10
	for _, r := range []int{0, 1} {
		t.Run(fmt.Sprintf("min_replicas_acked=%d", r), func(t *testing.T) {
			f := newFailover(t)
			bus := f.bus(t, r)
			ctx := context.Background()
			var c confirmed
			for i := range before {
				c.audit(ctx, bus, i)
			}
			require.Len(t, c.ok, before)
			f.link.Cut()
			for i := before; i < before+during; i++ {
				c.audit(ctx, bus, i)
			}
			lost := c.lost(f.promote(t))
			t.Logf("min_replicas_acked=%d: %d confirmed, %d not replicated, %d other errors; %d confirmed events lost in the failover",
				r, len(c.ok), c.notReplicated, c.other, lost)
			if r == 0 {
				assert.Len(t, c.ok, before+during)
				// and what the replica had not received yet when the cut came
				assert.GreaterOrEqual(t, lost, during, "everything written during the cut")
			} else {
				assert.Len(t, c.ok, before)
				assert.Equal(t, during, c.notReplicated)
				assert.Zero(t, lost)
			}
		})
	}
}

// TestMasterKillUnderLoad: producers write as fast as they can, the master
// is killed mid-stream and the replica takes over. With min_replicas_acked
// nothing confirmed is lost; without it, what is lost is the replication
// lag at the kill: on loopback usually nothing, thousands of events when
// the replica is starved of CPU (logged, not asserted).
func TestMasterKillUnderLoad(t *testing.T) {
	for _, r := range []int{0, 1} {
		t.Run(fmt.Sprintf("min_replicas_acked=%d", r), func(t *testing.T) {
			f := newFailover(t)
			bus := f.bus(t, r)
			ctx := context.Background()
			var c confirmed
			var n atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						c.audit(ctx, bus, int(n.Add(1)))
					}
				})
			}
			time.Sleep(500 * time.Millisecond)
			require.NoError(t, f.master.Kill(ctx))
			close(stop)
			wg.Wait()
			held := f.promote(t)
			lost := c.lost(held)
			t.Logf("min_replicas_acked=%d: %d confirmed, %d not replicated, %d other errors; the new master holds %d; %d confirmed events lost",
				r, len(c.ok), c.notReplicated, c.other, len(held), lost)
			if r > 0 {
				assert.Zero(t, lost)
			}
		})
	}
}
