package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// modeConfig writes a configuration with the given redis section (YAML
// lines under "redis:") and stream names.
func (e *env) modeConfig(redisYAML, streamName, dead, sink string) string {
	e.t.Helper()
	body := fmt.Sprintf(`redis:
%s
stream: {name: %q}
dead_letter: {stream: %q}
consumer: {block: 200ms, batch_size: 64, shutdown_timeout: 10s}
reclaim: {interval: 200ms, min_idle: 1s, max_deliveries: 3}
host: {cache_dir: %q}
log: {format: json, level: info}
metrics: {address: ""}
sinks:
  out: {type: stream, stream: %q}
plugins:
  - name: e2e
    path: %s/e2e-go.wasm
    sinks: [out]
    config: {"sink": "out"}
`, redisYAML, streamName, dead, e.cache, sink, e.wasm)
	path := filepath.Join(e.dir, fmt.Sprintf("modes-%d.yaml", time.Now().UnixNano()))
	require.NoError(e.t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// TestClusterLayoutIsRefusedUpFront: with a cluster and stream names that
// hash to different slots, config check and run exit 2 naming every key
// and its slot, without waiting for Redis (the cluster address is closed).
func TestClusterLayoutIsRefusedUpFront(t *testing.T) {
	e := newEnvWith(t)
	redisYAML := fmt.Sprintf("  cluster: {addrs: [%q]}", closedPort(t))
	bad := e.modeConfig(redisYAML, "audit:stream", "audit:dead", "audit:out")
	for _, cmd := range [][]string{{"config", "check", "--skip-plugins", bad}, {"run", "--config", bad, "--stop-when-idle"}} {
		code, _, stderr := e.run(20*time.Second, cmd...)
		assert.Equal(t, 2, code, stderr)
		for _, want := range []string{"stream.name", `"audit:stream"`, "dead_letter.stream", "sinks.out.stream", "slot", "hash tag"} {
			assert.Contains(t, stderr, want, cmd[0])
		}
	}
	good := e.modeConfig(redisYAML, "{audit}:stream", "{audit}:dead", "{audit}:out")
	code, stdout, stderr := e.run(20*time.Second, "config", "check", "--skip-plugins", good)
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "ok")
}

// TestRunExitsTwoOnPermanentRedisErrors: a wrong password, a missing
// password and an ACL user without the rights end `run` at once with exit 2
// (also with --stop-when-idle), instead of a retry loop; the password is
// never printed.
func TestRunExitsTwoOnPermanentRedisErrors(t *testing.T) {
	e := newEnvWith(t, redistest.WithArgs("--requirepass", "right-secret-pw"))
	admin := redis.NewClient(&redis.Options{Addr: e.redis.Addr(), Password: "right-secret-pw"})
	defer admin.Close()
	require.NoError(t, admin.Do(context.Background(), "ACL", "SETUSER", "weak", "on", ">weak-secret-pw", "~*", "-@all", "+hello", "+auth", "+ping").Err())
	for _, tc := range []struct {
		name, user, password, want string
	}{
		{"WRONGPASS", "", "wrong-secret-pw", "WRONGPASS"},
		{"NOAUTH", "", "", "NOAUTH"},
		{"NOPERM", "weak@", "weak-secret-pw", "NOPERM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.modeConfig(fmt.Sprintf("  url: redis://%s%s/0", tc.user, e.redis.Addr()), stream, dlq, out)
			p := e.startEnv([]string{"AUDITPROC_REDIS_PASSWORD=" + tc.password}, "run", "--config", cfg, "--stop-when-idle")
			code := p.wait(30 * time.Second)
			stderr := p.stderr.String()
			assert.Equal(t, 2, code, stderr)
			assert.Contains(t, stderr, tc.want)
			assert.NotContains(t, stderr, "secret-pw")
		})
	}
}

// TestRunEmitStatusOnClusterAndSentinel runs emit, run and status against a
// cluster (seed list URL and cluster.addrs) and through Sentinel.
func TestRunEmitStatusOnClusterAndSentinel(t *testing.T) {
	cluster := redistest.StartCluster(t)
	sentinel := redistest.StartSentinel(t)
	for _, tc := range []struct {
		name      string
		redisYAML string
		client    redis.UniversalClient
	}{
		{"cluster url", "  url: redis+cluster://" + strings.Join(cluster.Addrs()[:2], ","), cluster.Client(t)},
		{"cluster addrs", fmt.Sprintf("  cluster: {addrs: [%q]}", cluster.Addrs()[3]), cluster.Client(t)},
		{"sentinel url", "  url: redis+sentinel://" + strings.Join(sentinel.Addrs(), ",") + "/" + redistest.SentinelMasterName, sentinel.Client(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvWith(t)
			tag := fmt.Sprintf("{%s}", strings.ReplaceAll(tc.name, " ", "-"))
			s, d, o := tag+":stream", tag+":dead", tag+":out"
			cfg := e.modeConfig(tc.redisYAML, s, d, o)
			events := e.dir + "/events.jsonl"
			var lines []string
			for i := range 50 {
				lines = append(lines, fmt.Sprintf(`{"actor":"a%d","action":"x","seq":%d}`, i, i))
			}
			require.NoError(t, writeFile(events, strings.Join(lines, "\n")+"\n"))
			code, stdout, stderr := e.run(30*time.Second, "emit", "--config", cfg, "--file", events)
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, stdout, "emitted 50 event(s)")
			code, _, stderr = e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle", "--consumer", "c1")
			require.Equal(t, 0, code, stderr)
			ctx := context.Background()
			emits, err := tc.client.XRange(ctx, o, "-", "+").Result()
			require.NoError(t, err)
			n := 0
			for _, m := range emits {
				if m.Values["kind"] != "checkpoint" {
					n++ // not the replica's closing checkpoint
				}
			}
			assert.Equal(t, 50, n, "every event reached the sink")
			pend, err := tc.client.XPending(ctx, s, group).Result()
			require.NoError(t, err)
			assert.Zero(t, pend.Count)
			code, stdout, stderr = e.run(20*time.Second, "status", "--config", cfg, "--json")
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, stdout, `"lag": 0,`)
			assert.Contains(t, stdout, `"pending": 0,`)
		})
	}
}
