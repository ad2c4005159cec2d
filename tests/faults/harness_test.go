package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// Names and settings the suite's pipeline uses.
const (
	group    = "audit-consumers"
	keyID    = "faults"
	minIdle  = time.Second // reclaim.min_idle of the replicas
	maxDeliv = 5           // reclaim.max_deliveries
)

// keyNames are the Redis keys of a scenario's pipeline.
type keyNames struct {
	stream, dlq string
	first, out  string // what plugin "first" and plugin "second" saw
}

var (
	standaloneKeys = keyNames{stream: "audit:stream", dlq: "audit:dead", first: "faults:first", out: "faults:out"}
	// On Redis Cluster every key of one commit shares a hash tag (one slot).
	clusterKeys = keyNames{stream: "{audit}:stream", dlq: "{audit}:dead", first: "{audit}:first", out: "{audit}:out"}
)

// EnvImage names the auditproc image to test. Unset: scripts/image.sh builds
// auditproc:local from this checkout before the tests run.
const EnvImage = "AUDITPROC_IMAGE"

const defaultImage = "auditproc:local"

var image = defaultImage

// pluginCache names the Docker volume every replica of the test binary
// keeps its compiled plugins in (host.cache_dir, the image's
// /var/cache/auditproc): the first replica compiles the plugin, the others
// start at once. On a loaded 2-core machine a compile takes up to 10 s, per
// replica. Empty without Docker.
var pluginCache string

const cacheDir = "/var/cache/auditproc"

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

// buildAndRun builds the image from this checkout (Docker's layer cache keeps
// it quick when nothing changed), unless AUDITPROC_IMAGE names one, and only
// when a Docker engine answers: without one every test skips or fails
// through redistest.RequireDocker, with its reason.
func buildAndRun(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := exec.CommandContext(ctx, "docker", "info").Run()
	cancel()
	if err != nil {
		return m.Run()
	}
	if v := os.Getenv(EnvImage); v != "" {
		image = v
	} else {
		root, err := wasmtest.FindRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		cmd := exec.Command(filepath.Join(root, "scripts", "image.sh"))
		cmd.Dir = root
		cmd.Env = append(os.Environ(), EnvImage+"="+image)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "faults: scripts/image.sh:", err)
			return 1
		}
	}
	// Created by the first replica's mount, with the image's directory's
	// content and owner; removed once every container is gone.
	pluginCache = fmt.Sprintf("auditproc-faults-cache-%d", os.Getpid())
	code := m.Run()
	if out, err := exec.Command("docker", "volume", "rm", "-f", pluginCache).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: docker volume rm %s: %v: %s\n", pluginCache, err, out)
	}
	return code
}

// options shape one scenario's cluster.
type options struct {
	fsync        string // appendfsync of Redis: everysec (default) or always
	trapPerMille int    // plugin "second" traps on about this many of 1000 deliveries
	postgres     bool   // a PostgreSQL container and a third plugin emitting to a postgres sink
	// redisCluster runs Redis Cluster instead of one server: three masters
	// with a replica each, containers on the network (redistest.StartCluster
	// WithContainers), node timeout redistest.ClusterNodeTimeout.
	redisCluster bool
	minReplicas  int // redis.min_replicas_acked of the replicas and the producer
}

// cluster is one scenario's world: a private network, Redis on it as
// "redis" (or a Redis Cluster), replicas added by startReplica, and the
// test's keyring.
type cluster struct {
	t       *testing.T
	net     string
	redis   *redistest.Server  // one server; nil with options.redisCluster
	rc      *redistest.Cluster // with options.redisCluster
	rdb     redis.UniversalClient
	names   keyNames
	keys    *integrity.Keyring
	keyLine string // the keyring, inline, for the replicas' environment
	key     []byte
	config  []byte
	wasm    string
	fsync   string    // Redis's appendfsync
	pg      *pgServer // with options.postgres
	// minReplicas is redis.min_replicas_acked of the replicas and the
	// producer.
	minReplicas int
	// lossExcuse says why writes the producer saw acknowledged may be
	// missing from the stream (and chained writes from the trail): Redis
	// itself may lose them in this scenario. Empty: any loss is a violation.
	lossExcuse string
	// masterFailed: a cluster master of the pipeline's slot was killed or
	// cut off (what is lost is lost with it).
	masterFailed bool

	mu       sync.Mutex
	replicas []*replica
	counters map[string]float64 // metrics of replicas, summed at graceful stops and at the end
	forged   map[string]bool    // stream entry ids forge appended
	events   []string           // what the scenario did, for the table
}

func newCluster(t *testing.T, o options) *cluster {
	t.Helper()
	redistest.RequireDocker(t)
	if o.fsync == "" {
		o.fsync = "everysec"
	}
	c := &cluster{t: t, counters: map[string]float64{}, wasm: wasmtest.Path(t, "e2e-go"), fsync: o.fsync,
		minReplicas: o.minReplicas}
	redisYAML := `{url: "redis://redis:6379/0"}`
	if o.redisCluster {
		c.names = clusterKeys
		c.net = redistest.Network(t, redistest.WithFixedAddresses())
		c.rc = redistest.StartCluster(t, redistest.WithContainers(c.net), redistest.WithNodeOptions(
			redistest.WithAppendFsync(o.fsync), redistest.WithArgs("--maxmemory-policy", "noeviction")))
		redisYAML = fmt.Sprintf(`{cluster: {addrs: ["%s"]}, min_replicas_acked: %d}`,
			strings.Join(c.rc.Addrs(), `", "`), o.minReplicas)
	} else {
		c.names = standaloneKeys
		c.net = redistest.Network(t)
		c.redis = redistest.Start(t,
			redistest.WithBackend(redistest.Container),
			redistest.WithNetwork(c.net, "redis"),
			redistest.WithAppendFsync(o.fsync),
			redistest.WithArgs("--maxmemory-policy", "noeviction"))
		if o.fsync == "everysec" {
			c.lossExcuse = "lost by Redis itself when killed: acknowledged writes inside the AOF everysec window, never seen by auditproc"
		}
	}
	c.rdb = c.client()
	t.Cleanup(func() { _ = c.rdb.Close() })

	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	c.key = key
	c.keyLine = integrity.FormatKeyLine(keyID, key)
	c.keys, err = integrity.NewKeyring(keyID, map[string][]byte{keyID: key})
	require.NoError(t, err)

	pgSink, pgPlugin := "", ""
	if o.postgres {
		c.pg = startPostgres(t, c.net)
		pgSink = "\n  archive: {type: postgres, url: \"postgres://auditproc@postgres:5432/postgres?sslmode=disable\", password_env: " + pgPasswordEnv + ", timeout: 5s}"
		pgPlugin = `
  - name: archive
    path: /faults/e2e-go.wasm
    sinks: [archive]
    deadline: 90ms
    config: {sink: archive}`
	}
	hostYAML := ""
	if pluginCache != "" {
		hostYAML = fmt.Sprintf("\nhost: {cache_dir: %s}", cacheDir)
	}
	c.config = []byte(fmt.Sprintf(`redis: %s%s
stream: {name: %q, group: %q}
consumer: {workers: 2, batch_size: 64, block: 200ms, shutdown_timeout: 15s}
reclaim: {interval: 250ms, min_idle: %s, max_deliveries: %d}
dead_letter: {stream: %q}
log: {format: json, level: info}
metrics: {address: "0.0.0.0:9464"}
sinks:
  first: {type: stream, stream: %q}
  out: {type: stream, stream: %q}%s
plugins:
  - name: first
    path: /faults/e2e-go.wasm
    sinks: [first]
    deadline: 200ms
    config: {sink: first}
  - name: second
    path: /faults/e2e-go.wasm
    sinks: [out]
    deadline: 200ms
    config: {sink: out, trap_per_mille: %d}%s
`, redisYAML, hostYAML, c.names.stream, group, minIdle, maxDeliv, c.names.dlq, c.names.first, c.names.out, pgSink, o.trapPerMille, pgPlugin))
	if o.redisCluster {
		slot := c.slot()
		c.note("Redis Cluster: %d masters with a replica each (containers, cluster-node-timeout %s, AOF appendfsync %s, noeviction); slot %d of %s on %s; min_replicas_acked %d; replicas: %s; plugin traps per mille: %d",
			len(c.rc.Nodes)/2, redistest.ClusterNodeTimeout, o.fsync, slot, c.names.stream, c.nodeName(c.owner()), o.minReplicas, image, o.trapPerMille)
	} else {
		c.note("Redis %s (container, AOF appendfsync %s, noeviction); replicas: %s; plugin traps per mille: %d",
			c.redis.InternalAddr(), o.fsync, image, o.trapPerMille)
	}
	return c
}

// client is a new client of the scenario's Redis (a cluster client with
// options.redisCluster) whose commands are bounded by their context.
func (c *cluster) client() redis.UniversalClient {
	if c.rc != nil {
		opts := c.rc.Options()
		opts.ContextTimeoutEnabled = true
		return redis.NewClusterClient(opts)
	}
	opts := c.redis.Options()
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts)
}

// producerClient is client for a producer: dials bounded to a second, and
// no retry of a failed command by the client, so that every failure
// reaches the producer (its retries are its own, and counted). A cluster
// client still follows MOVED and ASK, and moves on from a dead node (up to
// its redirects).
func (c *cluster) producerClient() redis.UniversalClient {
	if c.rc != nil {
		opts := c.rc.Options()
		opts.ContextTimeoutEnabled = true
		opts.DialTimeout = time.Second
		opts.MaxRetries = -1
		return redis.NewClusterClient(opts)
	}
	opts := c.redis.Options()
	opts.ContextTimeoutEnabled = true
	opts.DialTimeout = time.Second
	opts.MaxRetries = -1
	return redis.NewClient(opts)
}

// slot is the cluster slot of the pipeline's keys.
func (c *cluster) slot() int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slot, err := c.rc.Keyslot(ctx, c.names.stream)
	require.NoError(c.t, err)
	return slot
}

// owner is the master serving the pipeline's slot now.
func (c *cluster) owner() *redistest.ClusterNode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := c.rc.Owner(ctx, c.slot())
	require.NoError(c.t, err)
	return n
}

// nodeName is a cluster node's alias on the network (redis-1 ... redis-6).
func (c *cluster) nodeName(n *redistest.ClusterNode) string {
	for i, m := range c.rc.Nodes {
		if m == n {
			return fmt.Sprintf("redis-%d", i+1)
		}
	}
	return "no node"
}

// note records a line of what happened, printed above the invariant table.
func (c *cluster) note(format string, args ...any) {
	line := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.events = append(c.events, line)
	c.mu.Unlock()
}

// replica is an auditproc container of the image, `auditproc run` with
// --consumer name, on the cluster's network under the alias name.
type replica struct {
	c    *cluster
	name string
	ctr  *testcontainers.DockerContainer
}

func (c *cluster) startReplica(name string) *replica {
	c.t.Helper()
	return c.startReplicas(name)[0]
}

// startReplicas starts replicas of the given names at once (their
// containers are created and their plugins loaded side by side).
func (c *cluster) startReplicas(names ...string) []*replica {
	c.t.Helper()
	rs := make([]*replica, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { rs[i], errs[i] = c.runReplica(name) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(c.t, err, "start replica %s from %s", names[i], image)
	}
	c.mu.Lock()
	c.replicas = append(c.replicas, rs...)
	c.mu.Unlock()
	for _, name := range names {
		c.note("%s started", name)
	}
	return rs
}

// runReplica runs a replica's container and registers its removal.
func (c *cluster) runReplica(name string) (*replica, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mounts []testcontainers.ContainerMount
	if pluginCache != "" {
		mounts = append(mounts, testcontainers.VolumeMount(pluginCache, cacheDir))
	}
	ctr, err := testcontainers.Run(ctx, image,
		testcontainers.WithMounts(mounts...),
		testcontainers.WithCmd("run", "--config", "/faults/plugins.yaml", "--consumer", name),
		testcontainers.WithEnv(c.replicaEnv()),
		testcontainers.WithFiles(
			testcontainers.ContainerFile{Reader: strings.NewReader(string(c.config)), ContainerFilePath: "/faults/plugins.yaml", FileMode: 0o644},
			testcontainers.ContainerFile{HostFilePath: c.wasm, ContainerFilePath: "/faults/e2e-go.wasm", FileMode: 0o644},
		),
		testcontainers.WithLabels(map[string]string{redistest.LabelTest: c.t.Name()}),
		tcnetwork.WithNetworkName([]string{name}, c.net),
		testcontainers.WithWaitStrategy(wait.ForLog(`"msg":"processor_started"`).WithStartupTimeout(90*time.Second)),
	)
	r := &replica{c: c, name: name, ctr: ctr}
	if ctr != nil {
		c.t.Cleanup(func() {
			if c.t.Failed() {
				c.t.Logf("replica %s log (tail):\n%s", name, tail(r.logs(), 40))
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = ctr.Terminate(ctx, testcontainers.StopTimeout(0))
		})
	}
	return r, err
}

func (r *replica) id() string { return r.ctr.GetContainerID() }

// kill is docker kill -s KILL: auditproc (PID 1) dies with its work in
// flight. It returns how many entries were left pending for the replica.
func (r *replica) kill() int64 { return r.signal("KILL") }

// quit is docker kill -s QUIT: the Go runtime writes every goroutine's stack
// to stderr and exits, for a replica that is stuck. The stacks go to
// build/faults-<replica>-goroutines.txt.
func (r *replica) quit() int64 {
	r.c.t.Helper()
	left := r.signal("QUIT")
	logs := r.logs()
	root, err := wasmtest.FindRoot()
	require.NoError(r.c.t, err)
	if i := strings.Index(logs, "goroutine "); i >= 0 {
		// What it logged before it was stopped: where it waited and why.
		_ = os.WriteFile(filepath.Join(root, "build", "faults-"+r.name+".log"), []byte(logs[:i]), 0o644)
		logs = logs[i:]
	}
	path := filepath.Join(root, "build", "faults-"+r.name+"-goroutines.txt")
	require.NoError(r.c.t, os.WriteFile(path, []byte(logs), 0o644))
	r.c.note("%s's goroutine stacks: %s", r.name, path)
	// The CI log keeps only the output: print auditproc's own goroutines.
	var ours []string
	for _, g := range strings.Split(logs, "\n\n") {
		if strings.Contains(g, "auditproc/internal/") {
			ours = append(ours, g)
		}
	}
	r.c.t.Logf("%s's auditproc goroutines when it was stuck:\n%s", r.name, strings.Join(ours, "\n\n"))
	return left
}

func (r *replica) signal(sig string) int64 {
	r.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.c.withDocker(func(cli *client.Client) error {
		_, err := cli.ContainerKill(ctx, r.id(), client.ContainerKillOptions{Signal: sig})
		return err
	})
	for r.running() {
		time.Sleep(20 * time.Millisecond)
	}
	pending := r.c.pendingOf(r.name)
	r.c.note("%s killed (SIG%s) with %d entries pending for it", r.name, sig, pending)
	return pending
}

// stop is docker stop: SIGTERM, auditproc drains and exits. Its counters are
// read first (they die with the process).
func (r *replica) stop() {
	r.c.t.Helper()
	r.c.scrape(r)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	timeout := 30 * time.Second
	require.NoError(r.c.t, r.ctr.Stop(ctx, &timeout))
	st, err := r.ctr.State(ctx)
	require.NoError(r.c.t, err)
	require.Equal(r.c.t, 0, st.ExitCode, "%s exits 0 after SIGTERM", r.name)
	r.c.note("%s stopped (SIGTERM, exit %d) with %d entries pending for it", r.name, st.ExitCode, r.c.pendingOf(r.name))
}

// start starts a stopped or killed replica again (same container, same
// consumer name).
func (r *replica) start() {
	r.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(r.c.t, r.ctr.Start(ctx))
	r.c.note("%s started again", r.name)
}

func (r *replica) running() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.ctr.State(ctx)
	return err == nil && st.Running
}

// disconnect cuts the replica off the network (docker network disconnect):
// it keeps running and keeps its in-flight work, but reaches nothing.
func (r *replica) disconnect() {
	r.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.c.withDocker(func(cli *client.Client) error {
		_, err := cli.NetworkDisconnect(ctx, r.c.net, client.NetworkDisconnectOptions{Container: r.id(), Force: true})
		return err
	})
	r.c.note("%s disconnected from the network", r.name)
}

func (r *replica) connect() {
	r.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.c.withDocker(func(cli *client.Client) error {
		_, err := cli.NetworkConnect(ctx, r.c.net, client.NetworkConnectOptions{
			Container: r.id(), EndpointConfig: &network.EndpointSettings{Aliases: []string{r.name}},
		})
		return err
	})
	r.c.note("%s connected again", r.name)
}

func (c *cluster) withDocker(f func(*client.Client) error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	require.NoError(c.t, err)
	defer cli.Close()
	require.NoError(c.t, f(cli.Client))
}

func (r *replica) logs() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := r.ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(logs: %v)", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// logCount counts the replica's JSON log lines whose msg is name.
func (r *replica) logCount(name string) int {
	return strings.Count(r.logs(), `"msg":"`+name+`"`)
}

// metrics reads the replica's /metrics from inside its container with
// `auditproc health --path /metrics` (the image has no shell and no curl; it
// works while the replica is cut off the network, too).
func (r *replica) metrics() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, out, err := r.ctr.Exec(ctx, []string{"/usr/local/bin/auditproc", "health", "--path", "/metrics"}, tcexec.Multiplexed())
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(out)
	if code != 0 {
		return nil, fmt.Errorf("auditproc health --path /metrics exited %d: %s", code, b)
	}
	return parseMetrics(string(b)), nil
}

// parseMetrics sums Prometheus text samples by metric name (labels
// ignored): "name{labels} value" or "name value".
func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name := fields[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			m[name] += v
		}
	}
	return m
}

// counted are the counters the table reports.
var counted = []string{"auditproc_late_acks_total", "auditproc_entries_reclaimed_total", "auditproc_redis_errors_total"}

// scrape adds a running replica's counters to the cluster's totals.
func (c *cluster) scrape(r *replica) {
	if !r.running() {
		return
	}
	m, err := r.metrics()
	if err != nil {
		c.t.Logf("metrics of %s: %v", r.name, err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range counted {
		c.counters[k] += m[k]
	}
	c.counters["scrapes"]++
}

// pendingOf returns how many entries are pending for consumer name.
func (c *cluster) pendingOf(name string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := c.rdb.XPending(ctx, c.names.stream, group).Result()
	if err != nil {
		return -1
	}
	return p.Consumers[name]
}

// lastRead returns when the replica's reads of the stream last succeeded
// (its auditproc_last_read_timestamp_seconds), or the zero time when
// unknown. XINFO CONSUMERS cannot tell: before Redis 7.2 a read that finds
// nothing new leaves a consumer's idle time running.
func (r *replica) lastRead() time.Time {
	m, err := r.metrics()
	if err != nil {
		return time.Time{}
	}
	ts, ok := m["auditproc_last_read_timestamp_seconds"]
	if !ok || ts == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ts*1e9))
}

// drain waits until the group has delivered every entry and nothing is
// pending, then scrapes and stops every running replica.
func (c *cluster) drain(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		done, state := c.drained()
		if done {
			break
		}
		last = state
		if time.Now().After(deadline) {
			c.t.Fatalf("the group did not drain within %s: %s", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.note("drained: nothing pending, every entry delivered")
	c.mu.Lock()
	rs := append([]*replica(nil), c.replicas...)
	c.mu.Unlock()
	for _, r := range rs {
		if r.running() {
			r.stop()
		}
	}
}

func (c *cluster) drained() (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	groups, err := c.rdb.XInfoGroups(ctx, c.names.stream).Result()
	if err != nil {
		return false, err.Error()
	}
	last, err := c.rdb.XRevRangeN(ctx, c.names.stream, "+", "-", 1).Result()
	if err != nil || len(last) == 0 {
		return false, fmt.Sprintf("stream empty or unreadable: %v", err)
	}
	for _, g := range groups {
		if g.Name == group {
			state := fmt.Sprintf("pending %d, last delivered %s, last entry %s", g.Pending, g.LastDeliveredID, last[0].ID)
			return g.Pending == 0 && g.LastDeliveredID == last[0].ID, state
		}
	}
	return false, "no consumer group yet"
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

var discard = slog.New(slog.DiscardHandler)
