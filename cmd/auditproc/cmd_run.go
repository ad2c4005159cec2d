package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/redisconn"
	"github.com/auditproc/auditproc/internal/streambus"
)

// configFlags are the flags of every command that reads the configuration:
// --config and the common overrides. Commands add their own typed overrides
// with key.
type configFlags struct {
	fs   *flag.FlagSet
	file *string
	keys map[string]string // flag name -> configuration key
}

func newConfigFlags(fs *flag.FlagSet) *configFlags {
	c := &configFlags{fs: fs, keys: map[string]string{}}
	c.file = fs.String("config", envOr("AUDITPROC_CONFIG", "plugins.yaml"), "configuration file (env AUDITPROC_CONFIG)")
	c.key("redis-url", "redis.url", "", "Redis URL, redis:// or rediss://")
	c.key("stream", "stream.name", "", "audit stream")
	c.key("group", "stream.group", "", "consumer group")
	return c
}

// key registers a flag overriding a configuration key; def's type (string,
// int or bool) is the flag's type.
func (c *configFlags) key(name, key string, def any, usage string) {
	usage += " (overrides " + key + ")"
	switch d := def.(type) {
	case int:
		c.fs.Int(name, d, usage)
	case bool:
		c.fs.Bool(name, d, usage)
	default:
		c.fs.String(name, "", usage)
	}
	c.keys[name] = key
}

// loadNoPipeline reads the configuration for commands that need no plugins
// (emit, status, dlq): defaults, file, environment, then the flags the user
// set; the pipeline's rules are not checked. A missing default plugins.yaml
// is no error: defaults, environment and flags are used alone.
func (c *configFlags) loadNoPipeline() (config.Config, error) {
	cfg, _, err := c.loadOrigins(true)
	if err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// loadOrigins is load that also says where each value came from; its error
// joins every problem found (see config.Problems).
func (c *configFlags) loadOrigins(noPipeline bool) (config.Config, config.Origins, error) {
	flags := map[string]any{}
	names := map[string]string{}
	c.fs.Visit(func(f *flag.Flag) {
		if key, ok := c.keys[f.Name]; ok {
			flags[key] = f.Value.(flag.Getter).Get()
			names[key] = f.Name
		}
	})
	return config.LoadOrigins(config.Source{
		File: c.path(), Getenv: os.Getenv, Environ: os.Environ,
		Flags: flags, FlagNames: names, NoPipeline: noPipeline,
	})
}

// runConfigFlags are run's configuration flags; config check takes the same,
// so that it checks what run would use.
func runConfigFlags(fs *flag.FlagSet) *configFlags {
	cf := newConfigFlags(fs)
	cf.key("consumer", "stream.consumer", "", "this replica's consumer name (default host name and pid)")
	cf.key("workers", "consumer.workers", 0, "pipeline workers")
	cf.key("batch-size", "consumer.batch_size", 0, "entries per read")
	cf.key("metrics-addr", "metrics.address", "", "listen address of /metrics, /healthz and /readyz; \"off\" disables")
	cf.key("log-format", "log.format", "", "json, text or auto")
	cf.key("log-level", "log.level", "", "debug, info, warn or error")
	cf.key("require-durable-redis", "safety.require_durable_redis", false, "refuse to start when Redis may evict keys or keeps no AOF")
	return cf
}

// path is the configuration file to read: --config (or AUDITPROC_CONFIG),
// or "" when the default plugins.yaml was not asked for explicitly and does
// not exist (defaults, environment and flags are then used alone).
func (c *configFlags) path() string {
	explicit := os.Getenv("AUDITPROC_CONFIG") != ""
	c.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	if _, err := os.Stat(*c.file); errors.Is(err, os.ErrNotExist) && !explicit {
		return ""
	}
	return *c.file
}

// set reports whether the user gave the flag name on the command line.
func (c *configFlags) set(name string) bool {
	found := false
	c.fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func runCommand() *command {
	var (
		cf           *configFlags
		stopWhenIdle bool
		summary      bool
		watch        bool
		force        bool
	)
	return &command{
		name:    "run",
		summary: "consume the audit stream and run every event through the plugin pipeline",
		usage:   "[--config plugins.yaml] [flags]",
		examples: `  # HMAC keys come from the environment (see 'auditproc keygen')
  export AUDITPROC_HMAC_KEYS_FILE=/etc/auditproc/keys
  auditproc run --config /etc/auditproc/plugins.yaml

  # two replicas share the work: each needs a unique consumer name
  auditproc run --consumer replica-a
  auditproc run --consumer replica-b

  # reload the pipeline (plugins.yaml's plugins, module files) without a restart
  kill -HUP $(pidof auditproc)          # or: auditproc run --watch

  # process what is in the stream, print a summary, and exit
  auditproc run --stop-when-idle --summary

  # auditproc keeps the Go heap's headroom at half of the live heap, at least 24 MiB
  # (docs/configuration.md); GOGC or GOMEMLIMIT replaces that policy
  GOMEMLIMIT=120MiB auditproc run`,
		flags: func(fs *flag.FlagSet) {
			cf = runConfigFlags(fs)
			fs.BoolVar(&stopWhenIdle, "stop-when-idle", false, "exit once nothing is left to read or pending")
			fs.BoolVar(&watch, "watch", false, "reload the pipeline when the configuration file or a plugin module changes (as on SIGHUP)")
			fs.BoolVar(&summary, "summary", false, "print a summary table on stdout when the run ends")
			fs.BoolVar(&force, "force", false, "start even when none of the stream's newest entries verifies with the keyring")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("run takes no arguments, got %q", args)
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			pf, err := runPreflight(ctx, cf, true, func(cfg *config.Config) *slog.Logger {
				return newLogger(sio.err, cfg.Log.Format, cfg.Log.Level)
			})
			if err != nil {
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return nil // stopped while starting: nothing was read
				}
				return err
			}
			pf.cf, pf.watch, pf.hup, pf.force = cf, watch, hup, force
			return startProcessor(ctx, sio, pf, stopWhenIdle, summary)
		},
	}
}

// runProcessor runs the processor on a configuration already loaded (bench
// builds its own): the keyring, the Redis client and the pipeline are
// prepared here as runPreflight prepares them for run.
func runProcessor(ctx context.Context, sio stdio, cfg *config.Config, stopWhenIdle, summary bool) error {
	// A stream layout that cannot work in the Redis mode is refused before
	// anything starts (it would fail every commit).
	if err := redisconn.CheckLayout(cfg); err != nil {
		return usageError{err}
	}
	keys, err := integrity.LoadKeyring(os.Getenv)
	if err != nil {
		return usageError{err}
	}
	rdb, mode, err := redisconn.New(cfg)
	if err != nil {
		return usageError{err}
	}
	pipeline, err := loadPipeline(ctx, cfg, newLogger(sio.err, cfg.Log.Format, cfg.Log.Level))
	if err != nil {
		_ = rdb.Close()
		return err
	}
	return startProcessor(ctx, sio, &preflight{cfg: *cfg, keys: keys, rdb: rdb, mode: mode, pipeline: pipeline}, stopWhenIdle, summary)
}

// startProcessor runs the processor on what preflight prepared, and closes
// it when the run ends.
func startProcessor(ctx context.Context, sio stdio, pf *preflight, stopWhenIdle, summary bool) error {
	cfg, keys, rdb, pipeline := &pf.cfg, pf.keys, pf.rdb, pf.pipeline
	logger := newLogger(sio.err, cfg.Log.Format, cfg.Log.Level)
	// Less GC headroom for a heap that is mostly long-lived plugin memory
	// (gc.go); the operator's GOGC or GOMEMLIMIT wins.
	if stop := tuneGC(os.Getenv); stop != nil {
		defer stop()
	}
	// Shutdown order (reverse of start): the processor stops reading,
	// finishes and acks what it read, then the plugins close, then Redis.
	defer rdb.Close()
	var proc *processor.Shards
	defer func() {
		// The pipeline running at the end: the first one, or the last
		// reload's (the processor closed the ones it replaced).
		if proc != nil {
			pipeline = proc.Pipeline()
		}
		_ = pipeline.Close(context.WithoutCancel(ctx))
	}()
	if err := checkRedis(ctx, rdb, pf.mode, cfg, logger); err != nil {
		return err
	}

	if err := checkDurability(ctx, rdb, logger, cfg.Safety.RequireDurableRedis); err != nil {
		return err
	}
	if err := recordShards(ctx, rdb, cfg, logger); err != nil {
		return err
	}
	// The replica is a source: its sink emits and dead letters are chained
	// (envelope version 2, sealed letters), so the processed trail verifies
	// like the one it reads. Each shard has a Bus of its own: its own chain
	// session, checkpoints and chained writes.
	n := cfg.ShardCount()
	buses := make([]*streambus.Bus, n)
	shardCfgs := make([]processor.Config, n)
	sinks, err := openSinks(cfg, logger)
	if err != nil {
		return err
	}
	for k := range n {
		sc := cfg.ShardConfig(k)
		bus, err := streambus.New(streambus.Config{Block: cfg.Consumer.Block, Count: int64(cfg.Consumer.BatchSize),
			RequireChain: cfg.Integrity.RequireChain, Source: runSource(cfg.Stream.Consumer),
			MinReplicasAcked: cfg.Redis.MinReplicasAcked, MinReplicasTimeout: cfg.Redis.MinReplicasTimeout,
			Checkpoint: integrity.ChainConfig{CheckpointEvery: cfg.Integrity.CheckpointEvery, CheckpointInterval: cfg.Integrity.CheckpointInterval},
		}, logger, rdb, keys)
		if err != nil {
			closeExternal(sinks)
			return err
		}
		buses[k] = bus
		shardCfgs[k] = processor.Config{
			Stream: sc.Stream.Name, Group: sc.Stream.Group, Consumer: sc.Stream.Consumer,
			DeadLetter: sc.DeadLetter.Stream, BatchSize: sc.Consumer.BatchSize, Block: sc.Consumer.Block,
			Workers: sc.Consumer.Workers, ReclaimInterval: sc.Reclaim.Interval, MinIdle: sc.Reclaim.MinIdle,
			MaxDeliveries: sc.Reclaim.MaxDeliveries, ShutdownTimeout: sc.Consumer.ShutdownTimeout, StateDir: sc.Consumer.StateDir,
			GapGrace: sc.Integrity.GapGrace, Sinks: shardSinkStreams(sinks, sc.Sinks), StopWhenIdle: stopWhenIdle,
		}
	}
	checkpoints, stopCheckpoints := context.WithCancel(context.WithoutCancel(ctx))
	var checkpointing sync.WaitGroup
	for _, bus := range buses {
		checkpointing.Go(func() { bus.RunCheckpoints(checkpoints) })
	}
	defer func() {
		// After the processor's last commit: the checkpoints stop, and the
		// closing ones say the replica's chains end here.
		stopCheckpoints()
		checkpointing.Wait()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Redis.IOTimeout+time.Second)
		defer cancel()
		for _, bus := range buses {
			if err := bus.CloseChain(cctx); err != nil {
				logger.Warn("audit_chain_not_closed", slog.String("source", bus.Source()), slog.String("error", err.Error()))
			}
		}
	}()
	if w := integrity.KeyringFileWarning(os.Getenv); w != "" {
		logger.Warn("keyring_file_readable", slog.String("detail", w))
	}
	if !pf.force {
		for k, bus := range buses {
			if err := checkKeyring(ctx, bus, shardCfgs[k].Stream, keys); err != nil {
				closeExternal(sinks)
				return err
			}
		}
	}
	metrics := processor.NewMetrics()
	registerBuildInfo(metrics.Registry)
	metrics.WatchPlugins(pipeline.Plugins())
	proc, err = processor.NewShards(shardCfgs, buses, logger, pipeline, metrics)
	if err != nil {
		closeExternal(sinks)
		return err
	}
	if cfg.Metrics.Address != "" {
		stop, err := serveMetrics(cfg.Metrics.Address, metrics, proc, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	logger.Info("processor_started", slog.String("stream", cfg.Stream.Name), slog.Int("shards", n), slog.String("group", cfg.Stream.Group),
		slog.String("consumer", cfg.Stream.Consumer), slog.Int("workers", cfg.Consumer.Workers),
		slog.Int("plugins", len(cfg.Plugins)), slog.String("key_id", keys.ActiveKeyID()))
	if pf.cf != nil {
		// Reloads stop before the pipeline is closed (deferred above).
		rl := newReloader(pf.cf, cfg, proc, metrics.Registry, logger)
		reloadCtx, stopReloads := context.WithCancel(ctx)
		var reloads sync.WaitGroup
		reloads.Go(func() { rl.run(reloadCtx, pf.hup, pf.watch) })
		defer reloads.Wait()
		defer stopReloads()
	}
	if err := proc.Run(ctx); err != nil {
		return err
	}
	if summary {
		printRunSummary(sio, proc.Stats(), rdb, cfg)
	}
	return nil
}

// loadPipeline loads every plugin of the configuration. The plugins load
// concurrently, one per core (reading, checking, compiling or reading the
// compile cache and the first instance are per plugin, tens of milliseconds
// each for a standard-Go module), and the pipeline keeps the configured
// order. A plugin that cannot load is a configuration error (exit 2): the
// error names every such plugin in pipeline order, and every plugin that
// did load is closed. Each plugin's load time is logged at debug level
// (plugin_loaded).
func loadPipeline(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*host.Pipeline, error) {
	plugins, errs := loadPlugins(ctx, cfg, logger)
	var bad []error
	for i, err := range errs {
		if err != nil {
			bad = append(bad, fmt.Errorf("plugins[%d] (%s): %w", i, cfg.Plugins[i].Name, err))
		}
	}
	if len(bad) > 0 {
		closePlugins(ctx, plugins)
		return nil, usageError{errors.Join(bad...)}
	}
	return host.NewPipeline(plugins...), nil
}

// loadPlugins loads cfg's plugins concurrently; errs[i] is plugins[i]'s
// error, plugins[i] nil where it failed.
func loadPlugins(ctx context.Context, cfg *config.Config, logger *slog.Logger) ([]*host.Plugin, []error) {
	specs := make([]host.PluginSpec, len(cfg.Plugins))
	plugins := make([]*host.Plugin, len(specs))
	errs := make([]error, len(specs))
	// One compilation cache for all the plugins: a module named twice is
	// compiled once. The plugins keep it open; the last one closes it.
	cache, err := host.NewCache(cfg.Host.CacheDir)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return plugins, errs
	}
	defer cache.Close(context.WithoutCancel(ctx))
	hc := host.Config{Cache: cache, Logger: logger}
	for i, p := range cfg.Plugins {
		conf, err := json.Marshal(p.Config)
		if err != nil {
			errs[i] = fmt.Errorf("config: %w", err)
			continue
		}
		if p.Config == nil {
			conf = []byte("{}")
		}
		specs[i] = host.PluginSpec{
			Name: p.Name, Path: p.Path, SHA256: p.SHA256, Config: conf,
			MemoryLimitBytes: uint64(p.MemoryLimit), Deadline: p.Deadline, Trusted: p.Trusted,
			Sinks: p.Sinks, MaxEventsPerInstance: p.MaxEventsPerInstance,
		}
	}
	// At most one load per core: more would not finish sooner, and a load
	// that compiles (cold cache) holds tens of MiB until it is done.
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range specs {
		if errs[i] != nil {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			plugins[i], errs[i] = host.Load(ctx, specs[i], hc)
			if errs[i] == nil {
				logger.Debug("plugin_loaded", slog.String("plugin", specs[i].Name), slog.Duration("duration", time.Since(start)))
			}
		})
	}
	wg.Wait()
	return plugins, errs
}

// closePlugins closes the plugins that loaded.
func closePlugins(ctx context.Context, plugins []*host.Plugin) {
	for _, pl := range plugins {
		if pl != nil {
			_ = pl.Close(context.WithoutCancel(ctx))
		}
	}
}

// checkDurability warns (or, when required, refuses) when Redis could lose
// audit entries on its own: an eviction policy other than noeviction, or no
// AOF. A server that forbids CONFIG is reported as unknown.
// checkRedis asks Redis once before anything starts: an answer that no
// retry can change (wrong password, missing ACL permission, not a Redis
// server, refused TLS) ends the run with exit 2 instead of a retry loop
// that would never succeed; an unreachable Redis is only logged, the
// processor retries until it comes.
func checkRedis(ctx context.Context, rdb redis.UniversalClient, mode redisconn.Mode, cfg *config.Config, logger *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, cfg.Redis.DialTimeout+cfg.Redis.IOTimeout)
	defer cancel()
	var streams []string
	for k := range cfg.ShardCount() {
		sc := cfg.ShardConfig(k)
		streams = append(streams, sc.Stream.Name, sc.DeadLetter.Stream)
		for _, s := range sc.Sinks {
			if s.Type == config.SinkStream {
				streams = append(streams, s.Stream)
			}
		}
	}
	err := redisconn.Check(cctx, rdb, mode, streams...)
	var pe *redisconn.PermanentError
	if errors.As(err, &pe) {
		return usageError{err}
	}
	if err != nil {
		logger.Warn("redis_unreachable_at_start", slog.String("mode", mode.String()), slog.String("error", err.Error()))
	}
	return nil
}

// recordShards records the shard count this replica reads
// (streambus.ShardsKey), so that no producer writes to a shard no processor
// reads. A count below the recorded one is refused (exit 2) while the
// shards it would drop hold entries not yet processed: they would wait
// forever. Redis unreachable: the check is skipped (the loop retries).
func recordShards(ctx context.Context, rdb redis.UniversalClient, cfg *config.Config, logger *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, cfg.Redis.DialTimeout+cfg.Redis.IOTimeout)
	defer cancel()
	n, stream := cfg.ShardCount(), cfg.Stream.Name
	rec, err := streambus.RecordedShards(cctx, rdb, stream)
	if err != nil {
		logger.Warn("shard_count_unchecked", slog.String("error", err.Error()))
		return nil
	}
	if n >= rec {
		if n > 1 || rec > 0 {
			if _, err := streambus.RaiseShards(cctx, rdb, stream, n); err != nil {
				logger.Warn("shard_count_unrecorded", slog.String("error", err.Error()))
			}
		}
		return nil
	}
	for k := n; k < rec; k++ {
		sc := cfg.ShardConfig(k)
		left, err := undrained(cctx, rdb, sc.Stream.Name, sc.Stream.Group)
		if err != nil {
			logger.Warn("shard_count_unchecked", slog.String("error", err.Error()))
			return nil
		}
		if left != "" {
			return usagef("stream.shards is %d, but the trail has %d shards (%s) and shard %d (%s) %s: "+
				"run with stream.shards %d until the shards past %d are drained, then lower it (docs/scaling.md)",
				n, rec, streambus.ShardsKey(stream), k, sc.Stream.Name, left, rec, n-1)
		}
	}
	lowered, err := streambus.LowerShards(cctx, rdb, stream, rec, n)
	switch {
	case err != nil:
		logger.Warn("shard_count_unrecorded", slog.String("error", err.Error()))
	case lowered:
		logger.Info("shard_count_lowered", slog.Int("from", rec), slog.Int("to", n))
	}
	return nil
}

// undrained says what a stream holds that group has not finished ("" when
// nothing): entries not yet read, or pending.
func undrained(ctx context.Context, rdb redis.UniversalClient, stream, group string) (string, error) {
	n, err := rdb.XLen(ctx, stream).Result()
	if err != nil || n == 0 {
		return "", err
	}
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil && !isNoSuchKey(err) {
		return "", err
	}
	for _, g := range groups {
		if g.Name != group {
			continue
		}
		switch {
		case g.Lag != 0:
			return fmt.Sprintf("has entries its group %s has not read (lag %d)", group, g.Lag), nil
		case g.Pending > 0:
			return fmt.Sprintf("has %d entries pending in its group %s", g.Pending, group), nil
		}
		return "", nil
	}
	return fmt.Sprintf("holds %d entries and no group %s has read them", n, group), nil
}

func checkDurability(ctx context.Context, rdb redis.UniversalClient, logger *slog.Logger, require bool) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	problems, err := streambus.DurabilityProblems(cctx, rdb)
	if err != nil {
		logger.Warn("redis_durability_unknown", slog.String("error", err.Error()))
		if require {
			return fmt.Errorf("cannot check Redis durability (CONFIG GET failed: %v) and --require-durable-redis is set", err)
		}
		return nil
	}
	for _, p := range problems {
		logger.Warn("redis_not_durable", slog.String("problem", p))
	}
	if require && len(problems) > 0 {
		return fmt.Errorf("redis is not durable and require_durable_redis is set: %s", strings.Join(problems, "; "))
	}
	return nil
}

// serveMetrics serves /metrics, /healthz (the process and its read loop are
// alive) and /readyz
// (Redis answers, the loop runs and no keyring mismatch is suspected).
func serveMetrics(addr string, m *processor.Metrics, proc *processor.Shards, logger *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !proc.Healthy() {
			http.Error(w, "unhealthy: the read loop is stalled (see read_loop_stalled in the log); restart this replica", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if proc.Ready() {
			fmt.Fprintln(w, "ready")
			return
		}
		reason := proc.NotReadyReason()
		if reason == "" {
			reason = "Redis unreachable or loop stopped"
		}
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("metrics.address %q: %v", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("metrics_listening", slog.String("address", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

func printRunSummary(sio stdio, st *processor.Stats, rdb redis.UniversalClient, cfg *config.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// Sums over the shards; unknown when any shard does not answer.
	pending, dlq := "unknown", "unknown"
	var npending, nlen int64
	var failed bool
	for _, stream := range cfg.StreamShards() {
		p, err := rdb.XPending(ctx, stream, cfg.Stream.Group).Result()
		failed = failed || err != nil
		if err == nil {
			npending += p.Count
		}
	}
	if !failed {
		pending = fmt.Sprint(npending)
	}
	failed = false
	for _, stream := range cfg.DeadLetterShards() {
		n, err := rdb.XLen(ctx, stream).Result()
		failed = failed || err != nil
		nlen += n
	}
	if !failed {
		dlq = fmt.Sprint(nlen)
	}
	w := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "auditproc run summary")
	fmt.Fprintf(w, "  processed (every plugin ok, acked)\t%d\n", st.Processed.Load())
	fmt.Fprintf(w, "  dropped by a filter (acked)\t%d\n", st.Dropped.Load())
	emitted := st.Emitted()
	for _, name := range slices.Sorted(maps.Keys(cfg.Sinks)) {
		fmt.Fprintf(w, "  emitted to sink %s\t%d\n", name, emitted[name])
	}
	fmt.Fprintf(w, "  forged or tampered entries refused\t%d (%d deliveries)\n", st.TamperedEntries(), st.Tampered.Load())
	fmt.Fprintf(w, "  dead-lettered: rejected by a plugin\t%d\n", st.Rejected.Load())
	fmt.Fprintf(w, "  dead-lettered: tampered, after max deliveries\t%d\n", st.TamperedDLQ.Load())
	fmt.Fprintf(w, "  dead-lettered: failing, after max deliveries\t%d\n", st.Exhausted.Load())
	fmt.Fprintf(w, "  retries scheduled\t%d\n", st.Retried.Load())
	fmt.Fprintf(w, "  dead-letter stream %s length\t%s\n", shardsLabel(cfg.DeadLetter.Stream, cfg.ShardCount()), dlq)
	fmt.Fprintf(w, "  still pending in %s\t%s\n", cfg.Stream.Group, pending)
	_ = w.Flush()
}

// openSinks turns the configured sinks into the processor's, opening the
// external ones (their secrets read, their TLS files loaded; they connect on
// their first write). The processor closes what it was given.
func openSinks(cfg *config.Config, logger *slog.Logger) (map[string]processor.Sink, error) {
	sinks := map[string]processor.Sink{}
	for name, s := range cfg.Sinks {
		ps := processor.Sink{Type: processor.SinkKind(s.Type), Stream: s.Stream, Path: s.Path}
		if s.External() {
			dest, err := s.OpenExternal(name, logger.With(slog.String("sink", name)))
			if err != nil {
				closeExternal(sinks)
				return nil, err
			}
			ps.Dest = dest
		}
		sinks[name] = ps
	}
	return sinks, nil
}

// closeExternal closes the external destinations of sinks (openSinks'),
// when the processor that would have closed them is not started.
func closeExternal(sinks map[string]processor.Sink) {
	for _, o := range sinks {
		if o.Dest != nil {
			_ = o.Dest.Close()
		}
	}
}

// shardSinkStreams is sinks with each stream sink's stream the shard's.
func shardSinkStreams(sinks map[string]processor.Sink, shard map[string]config.Sink) map[string]processor.Sink {
	out := make(map[string]processor.Sink, len(sinks))
	for name, s := range sinks {
		if s.Type == processor.SinkStream {
			s.Stream = shard[name].Stream
		}
		out[name] = s
	}
	return out
}

// shardsLabel names a stream in a summary: itself, or with "(N shards)".
func shardsLabel(stream string, n int) string {
	if n < 2 {
		return stream
	}
	return fmt.Sprintf("%s (%d shards)", stream, n)
}

// keyringProbe is how many of the newest entries run checks against the
// keyring before it starts.
const keyringProbe = 100

// checkKeyring refuses to start (exit 2) when the stream holds entries and
// none of the newest keyringProbe verifies: that is a wrong keyring far
// more often than an attack, and a processor started with it would
// dead-letter every valid entry. The error names the key ids seen and held.
func checkKeyring(ctx context.Context, bus *streambus.Bus, stream string, keys *integrity.Keyring) error {
	entries, err := bus.XRevRange(ctx, stream, "+", "-", keyringProbe)
	if err != nil || len(entries) == 0 {
		return nil // the read loop reports Redis trouble; an empty stream proves nothing
	}
	var seen []string
	for _, e := range entries {
		if _, err := bus.VerifyRaw(stream, e); err == nil {
			return nil
		}
		for i := 0; i+1 < len(e.Fields); i += 2 {
			if e.Fields[i] == integrity.FieldKeyID && !slices.Contains(seen, e.Fields[i+1]) && len(seen) < 10 {
				seen = append(seen, strings.Clone(e.Fields[i+1]))
			}
		}
	}
	return usagef("none of the newest %d entries of stream %q verifies with this keyring (key ids seen in them: %s; key ids held: %s): "+
		"started with the wrong keyring, auditproc would dead-letter every valid entry. Check AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE, "+
		"or start with --force if these entries are indeed forged",
		len(entries), stream, orNone(seen), strings.Join(keys.KeyIDs(), ", "))
}

func orNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// runSource is the source name of a replica: "run.<consumer>", made valid.
func runSource(consumer string) string {
	return integrity.SourceName("run." + consumer)
}
