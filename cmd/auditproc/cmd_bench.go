package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/bench"
	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
)

func benchCommand() *command {
	var (
		cfg   bench.Config
		only  string
		child string
		evs   string
	)
	return &command{
		name:    "bench",
		summary: "measure auditproc against a plain go-redis loop on a throwaway Redis",
		usage:   "[--entries N] [--rate N] [--only a,b] [flags]",
		examples: `  # the table of docs/performance.md (make bench)
  auditproc bench

  # a quicker run of two scenarios
  auditproc bench --entries 50000 --only baseline,default

  # the sinks: a stream, PostgreSQL and syslog side by side
  auditproc bench --entries 50000 --rounds 1 --only baseline,forward,postgres,syslog

  # Redis Cluster: 1 shard and 3 shards next to the standalone rows
  auditproc bench --only verify,default,produce-emit,cluster-verify-1,cluster-verify-3,cluster-default-1,cluster-default-3,cluster-emit-1,cluster-emit-3

Every scenario drains the same pre-filled stream through a new consumer group,
in a child process ('auditproc run --stop-when-idle' for the plugin pipelines),
whose rusage gives CPU and peak RSS. Throughput is counted from the group's
first read to its last ack, observed through Redis (start-up excluded). The
HMAC key is generated for the run and never printed.

The postgres and syslog scenarios forward every event, like 'forward', to a
PostgreSQL sink and to a syslog sink (TCP, octet-counting); the bench starts
its own PostgreSQL cluster and rsyslogd on 127.0.0.1 for them, in temporary
directories removed at the end. When PostgreSQL or rsyslog is not installed
(scripts/deps.sh installs both) the row says so and the rest runs.

The cluster-* scenarios run on a throwaway Redis Cluster of 3 masters
(redis-server --cluster-enabled yes on free loopback ports, joined by
redis-cli --cluster create): the processor ("verify, no plugins" and the
default pipeline) and 'emit --file' with stream.shards 1 and 3, each shard's
hash-tag slot moved, empty, to a master of its own. Their Redis CPU is read
from each node's INFO CPU and printed per node.`,
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&cfg.Entries, "entries", bench.DefaultEntries, "entries pre-filled and drained per scenario")
			fs.StringVar(&cfg.Executable, "auditproc", "", "the auditproc binary to measure (default: this one), to compare builds")
			fs.IntVar(&cfg.Rounds, "rounds", bench.DefaultRounds, "drains per scenario, taking turns; the fastest is reported")
			fs.IntVar(&cfg.Rate, "rate", bench.DefaultRate, "offered rate of the latency run, entries/s")
			durationVar(fs, &cfg.LatencyFor, "latency-for", bench.DefaultLatencyFor, "how long the latency run offers entries")
			fs.StringVar(&cfg.RedisURL, "redis-url", "", "a throwaway Redis to use instead of starting redis-server (its data is left behind)")
			fs.StringVar(&cfg.RedisServer, "redis-server", bench.DefaultRedisServer, "redis-server binary started for the run")
			fs.StringVar(&cfg.Pipeline, "pipeline", bench.DefaultPipeline, "the default pipeline's configuration file")
			fs.StringVar(&cfg.WasmDir, "wasm-dir", bench.DefaultWasmDir, "directory of the built example plugins (make plugins)")
			fs.StringVar(&cfg.CacheDir, "cache-dir", bench.DefaultCacheDir, "compiled-module cache, warmed before measuring")
			fs.StringVar(&cfg.PostgresBin, "postgres-bin", "", "directory of PostgreSQL's initdb and pg_ctl for the postgres scenario (default: $AUDITPROC_PG_BIN, the PATH, /usr/lib/postgresql/<newest>/bin)")
			fs.StringVar(&cfg.Rsyslogd, "rsyslogd", "", "rsyslogd program for the syslog scenario (default: the PATH, /usr/sbin)")
			fs.StringVar(&only, "only", "", "comma-separated scenarios: baseline, baseline-hmac, verify, verify-v2, noop-go, noop-c, forward, postgres, syslog, three, default, trusted, cluster-verify-1, cluster-verify-3, cluster-default-1, cluster-default-3, produce-raw, produce-raw-v2, produce-emit, produce-batch, produce-sync, cluster-emit-1, cluster-emit-3, trail")
			// The scenarios' own processes: not for users.
			fs.StringVar(&child, "child", "", "internal: run one scenario's consumer (baseline, baseline-hmac, verify) or producer (produce-raw, produce-raw-v2, produce-batch, produce-sync)")
			fs.StringVar(&evs, "events", "", "internal: the JSON-lines file a producer scenario appends")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("bench takes no arguments, got %q", args)
			}
			if child != "" {
				return benchChild(ctx, sio, child, evs)
			}
			if cfg.Executable == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				cfg.Executable = exe
			}
			if only != "" {
				cfg.Only = strings.Split(only, ",")
			}
			logger := newLogger(sio.err, "text", "info")
			rep, err := bench.Run(ctx, cfg, logger)
			if err != nil {
				return err
			}
			rep.Print(sio.out)
			return nil
		},
	}
}

// benchChild runs one scenario's consumer with its configuration from the
// environment (AUDITPROC_…), as the bench command sets it.
func benchChild(ctx context.Context, sio stdio, which, events string) error {
	cfg, err := config.Load(config.Source{Getenv: os.Getenv, NoPipeline: true})
	if err != nil {
		return usageError{err}
	}
	switch which {
	case "verify":
		// The processor as 'run' builds it, with a pipeline of no plugins
		// (a configuration file must name at least one).
		cfg.Plugins = nil
		cfg.Metrics.Address = ""
		return runProcessor(ctx, sio, &cfg, true, false)
	case "baseline", "baseline-hmac":
		var keys *integrity.Keyring
		if which == "baseline-hmac" {
			if keys, err = integrity.LoadKeyring(os.Getenv); err != nil {
				return usageError{err}
			}
		}
		opt, err := redis.ParseURL(cfg.Redis.URL)
		if err != nil {
			return usageError{err}
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		n, err := bench.Baseline(ctx, rdb, cfg.Stream.Name, cfg.Stream.Group, bench.DefaultBaselineCount, keys)
		if err != nil {
			return err
		}
		newLogger(sio.err, cfg.Log.Format, cfg.Log.Level).Info("baseline_drained", slog.Int("entries", n))
		return nil
	case "produce-raw", "produce-raw-v2":
		opt, err := redis.ParseURL(cfg.Redis.URL)
		if err != nil {
			return usageError{err}
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		if which == "produce-raw-v2" {
			_, err = bench.ProduceRawV2(ctx, rdb, cfg.Stream.Name, events)
		} else {
			_, err = bench.ProduceRaw(ctx, rdb, cfg.Stream.Name, events)
		}
		return err
	case "produce-batch", "produce-sync":
		keys, err := audit.LoadKeyring(os.Getenv)
		if err != nil {
			return usageError{err}
		}
		acfg := audit.Config{RedisURL: cfg.Redis.URL, Keys: keys, Stream: cfg.Stream.Name}
		if which == "produce-batch" {
			_, err = bench.ProduceBatched(ctx, acfg, events)
		} else {
			_, err = bench.ProduceSync(ctx, acfg, events, bench.SyncWorkers)
		}
		return err
	}
	return usagef("bench --child: unknown scenario %q", which)
}
