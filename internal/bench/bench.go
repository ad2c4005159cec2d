package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
)

// Defaults of Config.
const (
	DefaultEntries     = 200_000
	DefaultRate        = 10_000
	DefaultLatencyFor  = 5 * time.Second
	DefaultRedisServer = "redis-server"
	DefaultPipeline    = "plugins.yaml"
	DefaultWasmDir     = "build/wasm"
	DefaultCacheDir    = "build/cache"
	// DefaultBaselineCount is the COUNT of the baseline loop's reads.
	DefaultBaselineCount = 1000
	DefaultRounds        = 3
)

// Stream names in the benchmark's Redis.
const (
	stream = "bench:stream"
	// chainStream holds as many events as stream, signed with envelope
	// version 2 as one chained source.
	chainStream   = "bench:chain"
	latencyStream = "bench:latency"
	deadLetter    = "bench:dead"
	keyID         = "bench"
)

// Config says what to measure. Zero fields take the Default… values.
type Config struct {
	// Executable is the auditproc binary every scenario runs as a child.
	Executable string
	// Entries pre-filled and drained by every throughput scenario. Default
	// DefaultEntries.
	Entries int
	// Rate is the offered rate of the latency run, entries/s. Default
	// DefaultRate.
	Rate int
	// LatencyFor is how long the latency run offers entries. Default
	// DefaultLatencyFor.
	LatencyFor time.Duration
	// RedisURL of a server to use; empty starts RedisServer on a free
	// loopback port for the run. The server's data is not cleaned up: use a
	// throwaway one.
	RedisURL string
	// RedisServer is the redis-server binary. Default DefaultRedisServer.
	RedisServer string
	// Pipeline is the default pipeline's file. Default DefaultPipeline.
	Pipeline string
	// WasmDir holds the built example plugins. Default DefaultWasmDir.
	WasmDir string
	// CacheDir is the compiled-module cache (warmed before measuring).
	// Default DefaultCacheDir.
	CacheDir string
	// Only names the scenarios to run; empty runs all.
	Only []string
	// Rounds: every scenario drains the stream this many times, the
	// scenarios taking turns, and its fastest drain is reported (the
	// machine is shared: the best of several is the least disturbed).
	// Default DefaultRounds.
	Rounds int
	// PostgresBin is the directory of PostgreSQL's initdb and pg_ctl for
	// the postgres scenario; empty searches (pgserver.Bin).
	PostgresBin string
	// Rsyslogd is the rsyslogd program for the syslog scenario; empty
	// searches (syslogserver.Bin).
	Rsyslogd string
}

func (c *Config) setDefaults() {
	if c.Entries == 0 {
		c.Entries = DefaultEntries
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.LatencyFor == 0 {
		c.LatencyFor = DefaultLatencyFor
	}
	if c.RedisServer == "" {
		c.RedisServer = DefaultRedisServer
	}
	if c.Pipeline == "" {
		c.Pipeline = DefaultPipeline
	}
	if c.WasmDir == "" {
		c.WasmDir = DefaultWasmDir
	}
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir
	}
	if c.Rounds == 0 {
		c.Rounds = DefaultRounds
	}
}

// Result is one scenario's measurements.
type Result struct {
	Name  string
	Title string
	// Throughput is entries/s from the first read to the last ack.
	Throughput float64
	// Ratio is Throughput over the baseline's; for a cluster row, over
	// the standalone row Of.
	Ratio float64
	// RatioV2 is a producer row's Throughput over the raw loop's of
	// version 2 entries (produce-raw-v2), when it ran before it.
	RatioV2 float64
	// Shards is a cluster row's shard count (0: a standalone row).
	Shards int
	// Of names the standalone scenario a cluster row is compared with.
	Of string
	// NodeCPU is the Redis CPU per entry of each server: a cluster row's
	// nodes in node order (RedisCPU is their sum), the standalone one's.
	NodeCPU []time.Duration
	// CPU is the child's user+system time per entry while draining.
	CPU time.Duration
	// RedisCPU is the Redis server's per entry while draining (0 when
	// unknown: a server the run did not start); on the cluster, all
	// nodes' (INFO CPU).
	RedisCPU time.Duration
	// DestCPU is the external destination's (PostgreSQL's processes',
	// rsyslogd's) per entry while draining; 0 for the other scenarios.
	DestCPU time.Duration
	// PeakRSS is the child's maximum resident set, bytes (its VmHWM,
	// polled while it runs: see peakRSS).
	PeakRSS int64
	// Start is from the child's start to its first read.
	Start time.Duration
	// Latency: append-to-ack percentiles at the offered rate (Latency false
	// when not measured for this scenario).
	Latency  bool
	P50, P99 time.Duration
	LatN     int
	// Producer: a producer scenario (throughput from the child's start to
	// its exit, the file appended to a fresh stream).
	Producer bool
	// Missing says why the scenario was not run (its destination server is
	// not installed); its numbers are zero.
	Missing string
}

// Report is what Run measured.
type Report struct {
	Entries    int
	EventBytes int
	// ProduceEventBytes is the mean event size of the producer scenarios'
	// file (before event_id and timestamp are added).
	ProduceEventBytes int
	Rate              int
	Rounds            int
	Results           []Result
	// Trail holds the rows of the trail table: producer and processor
	// cost of envelope v2 next to v1, and `auditproc verify` next to a
	// plain XRANGE scan.
	Trail []TrailRow
	// Cluster says where the cluster rows' shards were, one line a trail.
	Cluster []string
	// Memory is the standalone Redis's memory per retained entry of the
	// pre-filled streams.
	Memory []MemoryRow
}

// MemoryRow is the Redis memory a pre-filled stream takes per entry:
// INFO MEMORY used_memory after its Entries XADDs minus before, divided
// by Entries.
type MemoryRow struct {
	Title   string
	Entries int
	Bytes   float64
}

// TrailRow is a rate and its ratio to a reference row (Of).
type TrailRow struct {
	Title string
	Rate  float64 // entries/s
	Ratio float64
	Of    string
}

type scenario struct {
	name, title string
	args        []string // after the executable
	pluginCfg   string   // configuration file, for the warm-up ("" for none)
	latency     bool
	sink        string // stream the forward plugin writes to, for latency
	stream      string // the stream drained; "" is stream
	// dest is the external destination the forward plugin writes to (the
	// postgres and syslog scenarios), nil for the others.
	dest *destination
	// trail is the sharded trail on the cluster a cluster scenario drains
	// (nil: the standalone Redis), env what its child's environment adds
	// (the cluster's URL, the shard count, the trail's names), of the
	// standalone scenario it is compared with.
	trail *clusterTrail
	env   []string
	of    string
}

type runner struct {
	cfg    Config
	log    *slog.Logger
	rdb    *redis.Client
	redis  *server // nil when not ours
	env    []string
	dir    string
	keys   *integrity.Keyring
	groups int
	// chainFilled: chainStream is filled (once per run).
	chainFilled bool
	// pg and syslog are the destinations of the external sink scenarios,
	// nil when those are not run.
	pg, syslog *destination
	// cluster is the cluster of the cluster scenarios, nil when those are
	// not run; trails are the scenarios' trails on it.
	cluster *cluster
	trails  []*clusterTrail
}

// Run runs every scenario and returns the report; progress goes to logger.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (*Report, error) {
	cfg.setDefaults()
	if cfg.Executable == "" {
		return nil, errors.New("bench: no auditproc executable")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "auditproc-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &runner{cfg: cfg, log: logger, dir: dir}

	url := cfg.RedisURL
	if url == "" {
		srv, err := startRedis(ctx, cfg.RedisServer, dir)
		if err != nil {
			return nil, err
		}
		defer srv.stop()
		r.redis, url = srv, srv.url
		logger.Info("redis_started", slog.String("url", url))
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	r.rdb = redis.NewClient(opt)
	defer r.rdb.Close()

	// The key is made for this run and reaches the children through their
	// environment only; it is never printed.
	secret, _ := integrity.GenerateKey()
	r.keys, err = integrity.NewKeyring(keyID, map[string][]byte{keyID: secret})
	if err != nil {
		return nil, err
	}
	cache, _ := filepath.Abs(cfg.CacheDir)
	r.env = append(cleanEnv(),
		"AUDITPROC_REDIS_URL="+url,
		integrity.EnvKeys+"="+integrity.FormatKeyLine(keyID, secret),
		"AUDITPROC_HOST_CACHE_DIR="+cache,
		"AUDITPROC_STREAM_CONSUMER=bench",
		"AUDITPROC_DEAD_LETTER_STREAM="+deadLetter,
		// Only the end of a drain waits for an empty read: keep it short.
		"AUDITPROC_CONSUMER_BLOCK=250ms",
		// A call stopped at its deadline on a busy machine leaves its entry
		// pending for a retry: claim it after a second, not a minute, so
		// that one stall does not hold a drain for a minute.
		"AUDITPROC_RECLAIM_MIN_IDLE=1s",
		"AUDITPROC_RECLAIM_INTERVAL=250ms",
		"AUDITPROC_LOG_LEVEL=warn",
		"AUDITPROC_LOG_FORMAT=text",
	)

	// The external sinks' servers, started for the run when their
	// scenarios are asked for.
	if r.wants(ScenarioPostgres) {
		if r.pg, err = startPostgres(ctx, cfg.PostgresBin, dir); err != nil {
			return nil, err
		}
		defer r.pg.close()
		if r.pg.missing == "" {
			logger.Info("postgres_started", slog.String("addr", r.pg.pg.Addr()))
		}
	}
	if r.wants(ScenarioSyslog) {
		if r.syslog, err = startSyslog(cfg.Rsyslogd); err != nil {
			return nil, err
		}
		defer r.syslog.close()
		if r.syslog.missing == "" {
			logger.Info("rsyslog_started", slog.String("addr", r.syslog.syslog.TCPAddr()))
		}
	}

	// The cluster of the cluster rows, started for the run.
	if r.wantsCluster() {
		if err := r.startCluster(ctx); err != nil {
			return nil, err
		}
		defer r.cluster.stop()
	}

	var scenarios []scenario
	if len(cfg.Only) == 0 || slices.ContainsFunc(cfg.Only, func(n string) bool { return !isProducer(n) && n != "trail" }) {
		if scenarios, err = r.scenarios(); err != nil {
			return nil, err
		}
	}
	producers := r.produceScenarios()
	trail := len(cfg.Only) == 0 || slices.Contains(cfg.Only, "trail")
	if len(scenarios) == 0 && len(producers) == 0 && !trail {
		return nil, fmt.Errorf("bench: no scenario named %q", r.cfg.Only)
	}
	rep := &Report{Entries: cfg.Entries, Rate: cfg.Rate, Rounds: cfg.Rounds}
	for _, t := range r.trails {
		rep.Cluster = append(rep.Cluster, t.notes())
	}
	if len(scenarios) > 0 {
		if err := r.drains(ctx, rep, scenarios); err != nil {
			return nil, err
		}
	}
	if len(producers) > 0 {
		if err := r.produces(ctx, rep, producers); err != nil {
			return nil, err
		}
	}
	if trail {
		if err := r.trailScan(ctx, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// wants reports whether the run includes the scenario name.
func (r *runner) wants(name string) bool {
	return len(r.cfg.Only) == 0 || slices.Contains(r.cfg.Only, name)
}

// drains runs the consumer scenarios on a pre-filled stream.
func (r *runner) drains(ctx context.Context, rep *Report, scenarios []scenario) error {
	if slices.ContainsFunc(scenarios, func(sc scenario) bool { return sc.trail == nil }) {
		r.log.Info("prefill_started", slog.Int("entries", r.cfg.Entries), slog.String("stream", stream))
		mem0, err := usedMemory(ctx, r.rdb)
		if err != nil {
			return err
		}
		t0 := time.Now()
		size, err := prefill(ctx, r.rdb, r.keys, stream, r.cfg.Entries)
		if err != nil {
			return err
		}
		v1 := float64(r.cfg.Entries) / time.Since(t0).Seconds()
		rep.EventBytes = size
		if err := r.memoryRow(ctx, rep, "envelope v1 ("+stream+")", mem0); err != nil {
			return err
		}
		if err := r.prefillChain(ctx, rep, v1); err != nil {
			return err
		}
	}
	for _, sc := range scenarios {
		if sc.trail != nil {
			size, err := r.fill(ctx, sc.trail)
			if err != nil {
				return err
			}
			rep.EventBytes = size
		}
		if sc.pluginCfg != "" && !sc.skipped() {
			if err := r.warm(ctx, sc); err != nil {
				return err
			}
		}
	}
	best := make([]Result, len(scenarios))
	for round := 1; round <= r.cfg.Rounds; round++ {
		for i, sc := range scenarios {
			if sc.skipped() {
				continue
			}
			r.log.Info("scenario_started", slog.String("scenario", sc.name), slog.Int("round", round))
			res, err := r.drain(ctx, sc)
			if err != nil {
				return fmt.Errorf("scenario %s: %w", sc.name, err)
			}
			r.log.Info("scenario_finished", slog.String("scenario", sc.name), slog.Int("round", round),
				slog.Float64("entries_per_s", res.Throughput), slog.Duration("cpu_per_entry", res.CPU))
			if res.Throughput > best[i].Throughput {
				best[i] = res
			}
		}
	}
	var base, verifyV1 float64
	standalone := map[string]float64{} // throughput by name
	for i, sc := range scenarios {
		res := best[i]
		if sc.trail != nil {
			if of := standalone[sc.of]; of > 0 {
				res.Ratio = res.Throughput / of
			}
			rep.Results = append(rep.Results, res)
			continue
		}
		standalone[sc.name] = res.Throughput
		if sc.skipped() {
			r.log.Warn("scenario_not_run", slog.String("scenario", sc.name), slog.String("reason", sc.dest.missing))
			rep.Results = append(rep.Results, Result{Name: sc.name, Title: sc.title, Missing: sc.dest.missing})
			continue
		}
		if sc.name == "baseline" {
			base = res.Throughput
		}
		switch sc.name {
		case "verify":
			verifyV1 = res.Throughput
		case "verify-v2":
			if verifyV1 > 0 {
				rep.Trail = append(rep.Trail,
					TrailRow{Title: "processor: verify, no plugins, envelope v1", Rate: verifyV1, Ratio: 1, Of: "v1"},
					TrailRow{Title: "processor: verify, no plugins, envelope v2", Rate: res.Throughput, Ratio: res.Throughput / verifyV1, Of: "v1"})
			}
		}
		if base > 0 {
			res.Ratio = res.Throughput / base
		}
		if sc.latency {
			r.log.Info("latency_started", slog.String("scenario", sc.name), slog.Int("rate", r.cfg.Rate))
			if err := r.latency(ctx, sc, &res); err != nil {
				return fmt.Errorf("scenario %s latency: %w", sc.name, err)
			}
		}
		rep.Results = append(rep.Results, res)
	}
	return nil
}

// cleanEnv is this process's environment without AUDITPROC_ variables, so
// that an operator's settings do not leak into the scenarios.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUDITPROC_") {
			env = append(env, kv)
		}
	}
	return env
}

// pluginFile is a plugin of a generated configuration file.
type pluginFile struct {
	Name    string         `json:"name"`
	Path    string         `json:"path"`
	Config  map[string]any `json:"config,omitempty"`
	Sinks   []string       `json:"sinks,omitempty"`
	Trusted bool           `json:"trusted,omitempty"`
}

// writeConfig writes a configuration (JSON, which is YAML too) with the
// given plugins and the default pipeline's sinks.
func (r *runner) writeConfig(name string, plugins []pluginFile, sinks map[string]config.Sink) (string, error) {
	type sinkFile struct {
		Type         string `json:"type"`
		Stream       string `json:"stream,omitempty"`
		Path         string `json:"path,omitempty"`
		URL          string `json:"url,omitempty"`
		Table        string `json:"table,omitempty"`
		PasswordFile string `json:"password_file,omitempty"`
		Address      string `json:"address,omitempty"`
	}
	sf := map[string]sinkFile{}
	for n, s := range sinks {
		sf[n] = sinkFile{Type: s.Type, Stream: s.Stream, Path: s.Path, URL: s.URL, Table: s.Table,
			PasswordFile: s.PasswordFile, Address: s.Address}
	}
	data, err := json.MarshalIndent(map[string]any{"plugins": plugins, "sinks": sf}, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(r.dir, name+".yaml")
	return path, os.WriteFile(path, data, 0o600)
}

func (r *runner) scenarios() ([]scenario, error) {
	wasm, err := filepath.Abs(r.cfg.WasmDir)
	if err != nil {
		return nil, err
	}
	defPath, err := filepath.Abs(r.cfg.Pipeline)
	if err != nil {
		return nil, err
	}
	def, err := config.Load(config.Source{File: defPath})
	if err != nil {
		return nil, fmt.Errorf("default pipeline: %w", err)
	}
	runArgs := func(cfg string) []string {
		return []string{"run", "--config", cfg, "--stop-when-idle", "--metrics-addr", "off"}
	}
	noop := func(module string) (string, error) {
		path := filepath.Join(wasm, module+".wasm")
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("%w (build the plugins: make plugins)", err)
		}
		return r.writeConfig(module, []pluginFile{{Name: "noop", Path: path}}, nil)
	}
	noopGo, err := noop("noop-go")
	if err != nil {
		return nil, err
	}
	noopC, err := noop("noop-c")
	if err != nil {
		return nil, err
	}
	var first3 []pluginFile
	var names []string
	for _, p := range def.Plugins[:min(3, len(def.Plugins))] {
		first3 = append(first3, pluginFile{Name: p.Name, Path: p.Path, Config: p.Config, Sinks: p.Sinks})
		names = append(names, p.Name)
	}
	three, err := r.writeConfig("three", first3, def.Sinks)
	if err != nil {
		return nil, err
	}
	var all []string
	var defaults, allTrusted, forward []pluginFile
	sink := ""
	for _, p := range def.Plugins {
		defaults = append(defaults, pluginFile{Name: p.Name, Path: p.Path, Config: p.Config, Sinks: p.Sinks})
		if p.Name == "forward" {
			forward = append(forward, pluginFile{Name: p.Name, Path: p.Path, Config: p.Config, Sinks: p.Sinks})
		}
		all = append(all, p.Name)
		allTrusted = append(allTrusted, pluginFile{Name: p.Name, Path: p.Path, Config: p.Config, Sinks: p.Sinks, Trusted: true})
		if p.Name == "forward" && len(p.Sinks) > 0 {
			sink = def.Sinks[p.Sinks[0]].Stream
		}
	}
	trusted, err := r.writeConfig("trusted", allTrusted, def.Sinks)
	if err != nil {
		return nil, err
	}
	fwd, err := r.writeConfig("forward", forward, def.Sinks)
	if err != nil {
		return nil, err
	}
	// The forward plugin again, its sink an external destination.
	external := func(d *destination, title string) (scenario, error) {
		sc := scenario{name: d.kind, title: title, dest: d, latency: true}
		if d.missing != "" {
			sc.title += " — not run: " + d.missing
			return sc, nil
		}
		if len(forward) == 0 || len(forward[0].Sinks) == 0 {
			return sc, errors.New("default pipeline: no forward plugin with a sink")
		}
		cfg, err := r.writeConfig(d.kind, forward, map[string]config.Sink{forward[0].Sinks[0]: d.sink})
		if err != nil {
			return sc, err
		}
		sc.args, sc.pluginCfg = runArgs(cfg), cfg
		return sc, nil
	}
	var sinkScenarios []scenario
	if r.pg != nil {
		sc, err := external(r.pg, "auditproc: verify + forward to a PostgreSQL sink (guarded)")
		if err != nil {
			return nil, err
		}
		sinkScenarios = append(sinkScenarios, sc)
	}
	if r.syslog != nil {
		sc, err := external(r.syslog, "auditproc: verify + forward to a syslog sink, TCP (guarded)")
		if err != nil {
			return nil, err
		}
		sinkScenarios = append(sinkScenarios, sc)
	}
	list := []scenario{
		{name: "baseline", title: "go-redis loop, no verification (baseline)", args: []string{"bench", "--child", "baseline"}},
		{name: "baseline-hmac", title: "go-redis loop + HMAC verify", args: []string{"bench", "--child", "baseline-hmac"}},
		{name: "verify", title: "auditproc: verify, no plugins", args: []string{"bench", "--child", "verify"}},
		{name: "verify-v2", title: "auditproc: verify, no plugins, envelope v2 (chained)", args: []string{"bench", "--child", "verify"}, stream: chainStream},
		{name: "noop-go", title: "auditproc: verify + Go no-op (guarded)", args: runArgs(noopGo), pluginCfg: noopGo},
		{name: "noop-c", title: "auditproc: verify + C no-op (guarded)", args: runArgs(noopC), pluginCfg: noopC},
		{name: "forward", title: "auditproc: verify + forward to a stream sink (guarded)", args: runArgs(fwd), pluginCfg: fwd, latency: sink != "", sink: sink},
	}
	list = append(list, sinkScenarios...)
	list = append(list, []scenario{
		{name: "three", title: "auditproc: " + strings.Join(names, "+"), args: runArgs(three), pluginCfg: three},
		{name: "default", title: fmt.Sprintf("auditproc: default pipeline (%d plugins)", len(all)), args: runArgs(defPath), pluginCfg: defPath, latency: sink != "", sink: sink},
		{name: "trusted", title: "auditproc: default pipeline, all trusted (no guard)", args: runArgs(trusted), pluginCfg: trusted, latency: sink != "", sink: sink},
	}...)
	if r.cluster != nil {
		cl, err := r.clusterScenarios(def, defaults, runArgs)
		if err != nil {
			return nil, err
		}
		list = append(list, cl...)
	}
	if len(r.cfg.Only) == 0 {
		return list, nil
	}
	var out []scenario
	for _, sc := range list {
		for _, n := range r.cfg.Only {
			if n == sc.name {
				out = append(out, sc)
			}
		}
	}
	return out, nil
}

// skipped reports whether the scenario's destination is not installed.
func (sc scenario) skipped() bool { return sc.dest != nil && sc.dest.missing != "" }

// warm fills the compiled-module cache for a scenario's plugins, so that
// its start time is that of a warm cache.
func (r *runner) warm(ctx context.Context, sc scenario) error {
	cmd := exec.CommandContext(ctx, r.cfg.Executable, "config", "check", sc.pluginCfg)
	cmd.Env = slices.Concat(r.env, sc.env)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("warm the compile cache (%s): %w\n%s", sc.pluginCfg, err, out)
	}
	return nil
}

// child starts one scenario's process on stream for group.
func (r *runner) child(ctx context.Context, sc scenario, stream, group string, extra ...string) (*exec.Cmd, *os.File, error) {
	logf, err := os.Create(filepath.Join(r.dir, group+".log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, r.cfg.Executable, append(sc.args, extra...)...)
	cmd.Env = append(slices.Concat(r.env, sc.env), "AUDITPROC_STREAM_NAME="+stream, "AUDITPROC_STREAM_GROUP="+group)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	return cmd, logf, nil
}

func tail(f *os.File) string {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}

func (r *runner) newGroup(ctx context.Context, stream, prefix string) (string, error) {
	return r.newGroupOn(ctx, r.rdb, prefix, stream)
}

// newGroupOn creates a new group, of one name, on every stream.
func (r *runner) newGroupOn(ctx context.Context, rdb redis.Cmdable, prefix string, streams ...string) (string, error) {
	r.groups++
	group := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), r.groups)
	for _, s := range streams {
		if err := rdb.XGroupCreateMkStream(ctx, s, group, "0").Err(); err != nil {
			return "", err
		}
	}
	return group, nil
}

// progress is a group's read and acked counts.
func (r *runner) progress(ctx context.Context, stream, group string) (read, acked int64, err error) {
	return progressOn(ctx, r.rdb, group, stream)
}

// progressOn is a group's read and acked counts summed over streams.
func progressOn(ctx context.Context, rdb redis.Cmdable, group string, streams ...string) (read, acked int64, err error) {
	for _, stream := range streams {
		groups, err := rdb.XInfoGroups(ctx, stream).Result()
		if err != nil {
			return 0, 0, err
		}
		found := false
		for _, g := range groups {
			if g.Name == group {
				read, acked, found = read+g.EntriesRead, acked+g.EntriesRead-g.Pending, true
			}
		}
		if !found {
			return 0, 0, fmt.Errorf("no group %q on %s", group, stream)
		}
	}
	return read, acked, nil
}

func (r *runner) redisCPU() time.Duration {
	if r.redis == nil {
		return 0
	}
	return cpuOf(r.redis.pid())
}

// on is where a scenario runs: its client, its streams (trail's shards on
// the cluster, else standalone on the standalone Redis), and a function
// that reads the Redis CPU used so far by each server (nil when unknown:
// a server the run did not start).
func (r *runner) on(trail *clusterTrail, standalone string) (redis.Cmdable, []string, func(context.Context) ([]time.Duration, error)) {
	if trail != nil {
		return r.cluster.rdb, trail.streams(), r.cluster.cpu
	}
	return r.rdb, []string{standalone}, func(context.Context) ([]time.Duration, error) {
		if r.redis == nil {
			return nil, nil
		}
		return []time.Duration{r.redisCPU()}, nil
	}
}

// drain runs a scenario on its pre-filled trail with a new group.
func (r *runner) drain(ctx context.Context, sc scenario) (Result, error) {
	res := Result{Name: sc.name, Title: sc.title, Of: sc.of}
	drained := stream
	if sc.stream != "" {
		drained = sc.stream
	}
	rdb, streams, serverCPU := r.on(sc.trail, drained)
	if sc.trail != nil {
		res.Shards = sc.trail.shards
		// The sinks of earlier drains would only take memory.
		for _, s := range sc.trail.outputs() {
			if err := rdb.Del(ctx, s).Err(); err != nil {
				return res, err
			}
		}
	}
	group, err := r.newGroupOn(ctx, rdb, sc.name, streams...)
	if err != nil {
		return res, err
	}
	if sc.dest != nil {
		if err := sc.dest.reset(ctx); err != nil {
			return res, fmt.Errorf("empty %s: %w", sc.dest.kind, err)
		}
	}
	started := time.Now()
	cmd, logf, err := r.child(ctx, sc, streams[0], group)
	if err != nil {
		return res, err
	}
	defer logf.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	abort := func(err error) (Result, error) {
		_ = cmd.Process.Kill()
		<-exited
		return res, err
	}

	var (
		first, last time.Time
		cpu0        time.Duration
		rcpu0, rcpu []time.Duration
		dcpu0, dcpu time.Duration
		waitErr     error
		done        bool
	)
	// Every entry is acked: a chained stream's checkpoints too.
	n, err := xlen(ctx, rdb, streams)
	if err != nil {
		return abort(err)
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !done {
		select {
		case waitErr = <-exited:
			done = true
		case <-tick.C:
		}
		if !done {
			res.PeakRSS = max(res.PeakRSS, PeakRSS(cmd.Process.Pid))
		}
		read, acked, err := progressOn(ctx, rdb, group, streams...)
		if err != nil {
			continue
		}
		now := time.Now()
		if first.IsZero() && read > 0 {
			first, cpu0 = now, cpuOf(cmd.Process.Pid)
			if rcpu0, err = serverCPU(ctx); err != nil {
				return abort(err)
			}
			if sc.dest != nil {
				dcpu0 = sc.dest.cpu()
			}
		}
		if last.IsZero() && acked >= n {
			last = now
			if rcpu, err = serverCPU(ctx); err != nil {
				return abort(err)
			}
			if sc.dest != nil {
				dcpu = sc.dest.cpu()
			}
		}
	}
	if waitErr != nil {
		return res, fmt.Errorf("%s: %w\n%s", strings.Join(sc.args, " "), waitErr, tail(logf))
	}
	if first.IsZero() || last.IsZero() {
		return res, fmt.Errorf("%s exited before acking all %d entries\n%s", strings.Join(sc.args, " "), n, tail(logf))
	}
	ps := cmd.ProcessState
	cpu := ps.UserTime() + ps.SystemTime()
	events := int64(r.cfg.Entries)
	res.Throughput = float64(events) / last.Sub(first).Seconds()
	res.CPU = (cpu - cpu0) / time.Duration(events)
	res.RedisCPU, res.NodeCPU = perEntry(rcpu0, rcpu, events)
	if dcpu > 0 {
		res.DestCPU = (dcpu - dcpu0) / time.Duration(events)
	}
	res.Start = first.Sub(started)
	if sc.dest != nil {
		// Every entry acked is in the destination: a sink that lost
		// entries fails the bench rather than measure fast.
		if err := sc.dest.await(ctx, int(n)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// xlen is the entry count of streams.
func xlen(ctx context.Context, rdb redis.Cmdable, streams []string) (int64, error) {
	var n int64
	for _, s := range streams {
		l, err := rdb.XLen(ctx, s).Result()
		if err != nil {
			return 0, err
		}
		n += l
	}
	return n, nil
}

// perEntry divides each server's CPU from before to after by events: the
// total over the servers and each one's (zero and nil when unknown).
func perEntry(before, after []time.Duration, events int64) (total time.Duration, each []time.Duration) {
	if len(before) == 0 || len(before) != len(after) || events <= 0 {
		return 0, nil
	}
	each = make([]time.Duration, len(before))
	for i := range before {
		each[i] = (after[i] - before[i]) / time.Duration(events)
		total += each[i]
	}
	return total, each
}

// prefillChain fills chainStream (once per run) and adds the producer rows
// of the trail table: v1's prefill rate (v1, entries/s) against this one's.
func (r *runner) prefillChain(ctx context.Context, rep *Report, v1 float64) error {
	if r.chainFilled {
		return nil
	}
	r.chainFilled = true
	r.log.Info("prefill_started", slog.Int("entries", r.cfg.Entries), slog.String("stream", chainStream))
	mem0, err := usedMemory(ctx, r.rdb)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := prefillChain(ctx, r.rdb, r.keys, chainStream, r.cfg.Entries); err != nil {
		return err
	}
	v2 := float64(r.cfg.Entries) / time.Since(t0).Seconds()
	if err := r.memoryRow(ctx, rep, "envelope v2, one chain, checkpoints included ("+chainStream+")", mem0); err != nil {
		return err
	}
	if v1 > 0 {
		rep.Trail = append(rep.Trail,
			TrailRow{Title: "producer: stamp + sign + pipelined XADD, envelope v1", Rate: v1, Ratio: 1, Of: "v1"},
			TrailRow{Title: "producer: stamp + chain sign + pipelined XADD, envelope v2", Rate: v2, Ratio: v2 / v1, Of: "v1"})
	}
	return nil
}

// memoryRow adds the Redis memory per entry of a stream just filled with
// Config.Entries events: used_memory now minus before, over the entries.
func (r *runner) memoryRow(ctx context.Context, rep *Report, title string, before int64) error {
	after, err := usedMemory(ctx, r.rdb)
	if err != nil {
		return err
	}
	rep.Memory = append(rep.Memory, MemoryRow{Title: title, Entries: r.cfg.Entries, Bytes: float64(after-before) / float64(r.cfg.Entries)})
	return nil
}

// usedMemory is the server's used_memory (INFO MEMORY), bytes.
func usedMemory(ctx context.Context, rdb redis.Cmdable) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO MEMORY: %w", err)
	}
	v, err := infoField(info, "used_memory")
	return int64(v), err
}

// trailScan measures `auditproc verify` on the chained stream against a
// plain XRANGE scan of it (go-redis, pages of 1000, fields into maps, no
// checks): the reference rate of reading the trail at all.
func (r *runner) trailScan(ctx context.Context, rep *Report) error {
	if err := r.prefillChain(ctx, rep, 0); err != nil {
		return err
	}
	n, err := r.rdb.XLen(ctx, chainStream).Result()
	if err != nil {
		return err
	}
	best := func(measure func() (time.Duration, error)) (float64, error) {
		var rate float64
		for range r.cfg.Rounds {
			d, err := measure()
			if err != nil {
				return 0, err
			}
			rate = max(rate, float64(n)/d.Seconds())
		}
		return rate, nil
	}
	scan, err := best(func() (time.Duration, error) {
		t0 := time.Now()
		start := "-"
		for {
			page, err := r.rdb.XRangeN(ctx, chainStream, start, "+", 1000).Result()
			if err != nil {
				return 0, err
			}
			if len(page) < 1000 {
				return time.Since(t0), nil
			}
			start = "(" + page[len(page)-1].ID
		}
	})
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(r.dir, "verify.yaml")
	if err := os.WriteFile(cfgPath, []byte("{}\n"), 0o600); err != nil {
		return err
	}
	verify, err := best(func() (time.Duration, error) {
		cmd := exec.CommandContext(ctx, r.cfg.Executable, "verify", "--config", cfgPath, "--stream", chainStream, "--quiet")
		cmd.Env = r.env
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("auditproc verify: %w\n%s", err, out)
		}
		return time.Since(t0), nil
	})
	if err != nil {
		return err
	}
	rep.Trail = append(rep.Trail,
		TrailRow{Title: "plain XRANGE scan, pages of 1000 (go-redis, no checks)", Rate: scan, Ratio: 1, Of: "XRANGE"},
		TrailRow{Title: "auditproc verify (every signature, the chain, a process of its own)", Rate: verify, Ratio: verify / scan, Of: "XRANGE"})
	return nil
}
