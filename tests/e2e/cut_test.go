package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// cutRounds is how many times TestCutReplicaResumes cuts the replica off in
// a row, per mode.
const cutRounds = 4

// TestCutReplicaResumes cuts a running replica off Redis (every open
// connection goes silent for good, as when a partition ends with the peer
// at a new address) for longer than its I/O timeout, several times in a
// row, in standalone, cluster and Sentinel mode. After each cut it must resume by
// itself: events appended after the network returns are processed, those
// caught in the cut are reclaimed, and nothing is lost.
func TestCutReplicaResumes(t *testing.T) {
	const (
		block     = 200 * time.Millisecond
		ioTimeout = time.Second
	)
	for _, mode := range []string{"standalone", "cluster", "sentinel"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvWith(t)
			var (
				links     []*redistest.Link
				rdb       redis.UniversalClient
				redisYAML string
			)
			switch mode {
			case "standalone":
				l := redistest.NewLink(t, e.redis.Addr)
				links = []*redistest.Link{l}
				rdb = e.redis.Client(t)
				redisYAML = fmt.Sprintf("  url: redis://%s/0", l.Addr())
			case "sentinel":
				// The sentinels name the master at its link's address; the
				// cuts are shorter than their down-after time (no
				// failover): the replica must find its master again.
				sn := redistest.StartSentinelLinked(t, time.Minute)
				links = []*redistest.Link{sn.Link}
				rdb = sn.Servers[0].Client(t) // the test's own writes go around the link
				redisYAML = "  url: redis+sentinel://" + joinAddrs(sn.Addrs()) + "/" + redistest.SentinelMasterName
			default:
				c := redistest.StartCluster(t, redistest.WithLinks())
				for _, n := range c.Nodes {
					links = append(links, n.Link)
				}
				rdb = c.Client(t)
				redisYAML = fmt.Sprintf("  cluster: {addrs: [%q]}", c.Addrs()[0])
			}
			redisYAML += fmt.Sprintf("\n  io_timeout: %s\n  dial_timeout: %s", ioTimeout, ioTimeout)
			s, d, o := "{cut}:stream", "{cut}:dead", "{cut}:out"
			cfg := e.modeConfig(redisYAML, s, d, o)
			cfg = rewrite(t, cfg, "consumer: {block: 200ms", fmt.Sprintf("consumer: {block: %s", block))
			bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, e.keys)
			require.NoError(t, err)
			ctx := context.Background()
			emitted := 0
			emit := func(n int) {
				for range n {
					_, err := bus.XAdd(ctx, s, []byte(fmt.Sprintf(`{"actor":"a","action":"x","seq":%d}`, emitted)), 0)
					require.NoError(t, err)
					emitted++
				}
			}
			sinkLen := func() int64 { return rdb.XLen(ctx, o).Val() }
			p := e.start("run", "--config", cfg, "--consumer", "replica-a")
			emit(100)
			waitFor(t, 60*time.Second, "the first events to be processed", func() bool { return sinkLen() >= 100 })
			for round := 1; round <= cutRounds; round++ {
				for _, l := range links {
					l.Cut()
				}
				emit(20) // caught in the cut: delivered to silent connections or waiting
				time.Sleep(3 * ioTimeout)
				for _, l := range links {
					l.Restore()
				}
				restored := time.Now()
				before := sinkLen()
				emit(20)
				waitFor(t, 60*time.Second, fmt.Sprintf("round %d: the replica to process again after the cut", round),
					func() bool { return sinkLen() > before })
				resumed := time.Since(restored)
				t.Logf("round %d: replica resumed %s after the network returned (block %s, io_timeout %s)",
					round, resumed.Round(time.Millisecond), block, ioTimeout)
				// The bound of the issue: block time plus the I/O timeout,
				// with room for one dial and the reclaim interval.
				assert.Less(t, resumed, block+ioTimeout+ioTimeout+5*time.Second, "round %d", round)
				waitFor(t, 60*time.Second, fmt.Sprintf("round %d: every event to be processed and acked", round), func() bool {
					pend, err := rdb.XPending(ctx, s, group).Result()
					return sinkLen() >= int64(emitted) && err == nil && pend.Count == 0
				})
			}
			p.signal(syscall.SIGTERM)
			assert.Equal(t, 0, p.wait(30*time.Second))
			// Nothing lost: every event reached the sink at least once.
			seen := map[string]bool{}
			msgs, err := rdb.XRange(ctx, o, "-", "+").Result()
			require.NoError(t, err)
			for _, m := range msgs {
				if ev, ok := m.Values["event"].(string); ok {
					i := strings.Index(ev, `"seq":`)
					if i >= 0 {
						seen[strings.TrimRight(strings.SplitN(ev[i+6:], ",", 2)[0], "}")] = true
					}
				}
			}
			assert.Len(t, seen, emitted, "every event reached the sink")
		})
	}
}

// rewrite replaces old with new in the file at path (which must hold old).
func rewrite(t *testing.T, path, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), old)
	out := filepath.Join(filepath.Dir(path), "rewritten-"+filepath.Base(path))
	require.NoError(t, os.WriteFile(out, []byte(strings.Replace(string(b), old, new, 1)), 0o600))
	return out
}
