package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// TestClusterSlotMigrationWhileProcessing moves the slot of the audit
// streams from master to master, key by key (so that a commit meets ASK,
// TRYAGAIN and MOVED), again and again while two replicas process and a
// producer appends. Nothing is lost and nothing is doubled: every event
// reaches the stream sink exactly once, and nothing stays pending.
func TestClusterSlotMigrationWhileProcessing(t *testing.T) {
	const n = 3000
	e := newEnvWith(t)
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	s, d, o := "{mig}:stream", "{mig}:dead", "{mig}:out"
	cfg := e.modeConfig(fmt.Sprintf("  cluster: {addrs: [%q]}", c.Addrs()[0]), s, d, o)
	bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, e.keys)
	require.NoError(t, err)
	// The group exists before the replicas start, so that the migration
	// carries it from the first move on.
	_, err = bus.XAdd(ctx, s, []byte(`{"actor":"a","action":"x","seq":-1}`), 0)
	require.NoError(t, err)

	a := e.start("run", "--config", cfg, "--consumer", "replica-a")
	b := e.start("run", "--config", cfg, "--consumer", "replica-b")

	var wg sync.WaitGroup
	produced := make(chan struct{})
	wg.Go(func() {
		defer close(produced)
		for i := range n {
			ev := fmt.Sprintf(`{"actor":"a","action":"x","seq":%d}`, i)
			for {
				// A producer retries what Redis refused during the move;
				// a retried append may write twice (at least once), which
				// the check below tells apart by entry id.
				if _, err := bus.XAdd(ctx, s, []byte(ev), 0); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	slot, err := c.Keyslot(ctx, s)
	require.NoError(t, err)
	moves := 0
	mctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for done := false; !done; {
		select {
		case <-produced:
			done = moves >= 2
		default:
		}
		masters, err := c.Masters(mctx)
		require.NoError(t, err)
		owner, err := c.Owner(mctx, slot)
		require.NoError(t, err)
		var to *redistest.ClusterNode
		for _, m := range masters {
			if m != owner {
				to = m
				break
			}
		}
		// One key per MIGRATE, a pause between: the keys of one commit
		// stand on two nodes for a while.
		require.NoError(t, c.MigrateSlot(mctx, slot, to, 1, 150*time.Millisecond))
		moves++
		time.Sleep(300 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("slot %d moved %d times while %d events were appended and processed", slot, moves, n)

	waitFor(t, 2*time.Minute, "every entry to be processed and acked", func() bool {
		pend, err := rdb.XPending(ctx, s, group).Result()
		info, err2 := rdb.XInfoGroups(ctx, s).Result()
		return err == nil && err2 == nil && pend.Count == 0 && len(info) == 1 && info[0].Lag == 0
	})
	a.signal(syscall.SIGTERM)
	b.signal(syscall.SIGTERM)
	assert.Equal(t, 0, a.wait(30*time.Second))
	assert.Equal(t, 0, b.wait(30*time.Second))

	entries, err := rdb.XRange(ctx, s, "-", "+").Result()
	require.NoError(t, err)
	perEntry := map[string]int{}
	sink, err := rdb.XRange(ctx, o, "-", "+").Result()
	require.NoError(t, err)
	for _, m := range sink {
		env, err := e.keys.Verify(o, m.Values)
		require.NoError(t, err)
		var rec map[string]any
		require.NoError(t, json.Unmarshal(env.Event, &rec))
		id, _ := rec["entry_id"].(string)
		if id == "" {
			id, _ = rec["event_id"].(string)
		}
		perEntry[id]++
	}
	dead, err := rdb.XLen(ctx, d).Result()
	require.NoError(t, err)
	assert.Zero(t, dead, "nothing dead-lettered")
	doubled := 0
	for _, k := range perEntry {
		if k > 1 {
			doubled++
		}
	}
	assert.Zero(t, doubled, "no entry emitted twice")
	assert.GreaterOrEqual(t, len(sink), n+1, "every event reached the sink")
	t.Logf("%d stream entries, %d sink entries", len(entries), len(sink))
}

// TestSentinelFailover kills the master (SIGKILL) while two replicas
// process and a producer appends through Sentinel. The sentinels promote
// the replica; the producer and both replicas follow it by themselves.
// Every entry on the new master reaches the sink exactly once (the ack and
// the emit are one script on one node) and nothing stays pending. Writes
// the old master acknowledged but had not yet replicated are lost with it
// (replication is asynchronous): the test counts them.
func TestSentinelFailover(t *testing.T) {
	const n = 2000
	e := newEnvWith(t)
	sn := redistest.StartSentinel(t)
	rdb := sn.Client(t)
	ctx := context.Background()
	s, d, o := "audit:stream", "audit:dead", "audit:out"
	cfg := e.modeConfig("  url: redis+sentinel://"+joinAddrs(sn.Addrs())+"/"+redistest.SentinelMasterName, s, d, o)
	bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, e.keys)
	require.NoError(t, err)

	a := e.start("run", "--config", cfg, "--consumer", "replica-a")
	b := e.start("run", "--config", cfg, "--consumer", "replica-b")
	acked := make([]string, 0, n) // entry ids the producer was told were written
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			ev := fmt.Sprintf(`{"actor":"a","action":"x","seq":%d}`, i)
			for {
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				entry, err := bus.XAdd(actx, s, []byte(ev), 0)
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, entry.ID)
					mu.Unlock()
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if i%100 == 0 {
				time.Sleep(50 * time.Millisecond) // a steady rate, so the kill lands mid-stream
			}
		}
	})
	waitFor(t, time.Minute, "a third of the events to be written", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= n/3
	})
	old, err := sn.Master(ctx)
	require.NoError(t, err)
	require.NoError(t, old.Kill(ctx))
	killed := time.Now()
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	promoted, err := sn.WaitFailover(fctx, old.Addr())
	require.NoError(t, err)
	t.Logf("master killed; %s promoted %s later", promoted.Addr(), time.Since(killed).Round(time.Millisecond))
	wg.Wait()

	waitFor(t, 2*time.Minute, "every entry to be processed and acked on the new master", func() bool {
		pend, err := rdb.XPending(ctx, s, group).Result()
		info, err2 := rdb.XInfoGroups(ctx, s).Result()
		return err == nil && err2 == nil && pend.Count == 0 && len(info) == 1 && info[0].Lag == 0
	})
	a.signal(syscall.SIGTERM)
	b.signal(syscall.SIGTERM)
	assert.Equal(t, 0, a.wait(30*time.Second))
	assert.Equal(t, 0, b.wait(30*time.Second))

	entries, err := rdb.XRange(ctx, s, "-", "+").Result()
	require.NoError(t, err)
	present := map[string]bool{}
	for _, m := range entries {
		present[m.ID] = true
	}
	lost := 0
	for _, id := range acked {
		if !present[id] {
			lost++
		}
	}
	sink, err := rdb.XRange(ctx, o, "-", "+").Result()
	require.NoError(t, err)
	events := map[string]int{}
	for _, m := range sink {
		env, err := e.keys.Verify(o, m.Values)
		require.NoError(t, err)
		var rec map[string]any
		require.NoError(t, json.Unmarshal(env.Event, &rec))
		id, _ := rec["event_id"].(string)
		events[id]++
	}
	doubled := 0
	for _, k := range events {
		if k > 1 {
			doubled++
		}
	}
	t.Logf("| producer-acknowledged writes | on the new master | lost with the old master | sink entries | doubled |")
	t.Logf("| %d | %d | %d | %d | %d |", len(acked), len(entries), lost, len(sink), doubled)
	assert.Zero(t, doubled, "no entry emitted twice on the surviving master")
	assert.Len(t, events, len(sink))
	dead, err := rdb.XLen(ctx, d).Result()
	require.NoError(t, err)
	assert.Zero(t, dead)
	assert.GreaterOrEqual(t, len(sink)+lost, len(entries), "every surviving entry reached the sink")
}

func joinAddrs(a []string) string {
	out := ""
	for i, s := range a {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
