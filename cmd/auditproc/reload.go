package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/processor"
)

// reloader rebuilds the pipeline on SIGHUP or, with run --watch, when
// plugins.yaml or a plugin's module changes. The new pipeline is loaded
// completely (read, compile, instantiate, auditproc_init) before the
// processor swaps it in between chunks; on any failure the running pipeline
// stays and the reason is logged. Settings other than the plugins (Redis,
// stream, group, consumer, reclaim, sinks, metrics, log) cannot change live:
// a changed one is named in the log and keeps its value.
type reloader struct {
	cf      *configFlags
	running config.Config
	hash    string
	proc    *processor.Shards
	logger  *slog.Logger

	reloads *prometheus.CounterVec // by result
	hashG   prometheus.Gauge
	mu      sync.Mutex // one reload at a time
}

func newReloader(cf *configFlags, cfg *config.Config, proc *processor.Shards, reg prometheus.Registerer, logger *slog.Logger) *reloader {
	r := &reloader{cf: cf, running: *cfg, proc: proc, logger: logger}
	r.reloads, r.hashG = registerReloadMetrics(reg)
	r.hash = configHash(cf.path(), cfg)
	r.hashG.Set(hashValue(r.hash))
	return r
}

// registerReloadMetrics creates auditproc_config_reloads_total{result} and
// auditproc_config_hash on reg.
func registerReloadMetrics(reg prometheus.Registerer) (*prometheus.CounterVec, prometheus.Gauge) {
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "auditproc_config_reloads_total",
		Help: "Pipeline reloads (SIGHUP or run --watch), by result: success or failure.",
	}, []string{"result"})
	hash := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "auditproc_config_hash",
		Help: "The first 48 bits of the SHA-256 of the loaded configuration file and plugin modules, as a number; it changes when a reload loads a different pipeline.",
	})
	for _, res := range []string{"success", "failure"} {
		reloads.WithLabelValues(res)
	}
	reg.MustRegister(reloads, hash)
	return reloads, hash
}

// configHash is the SHA-256 of the configuration file and every plugin
// module, in order ("" parts for what cannot be read).
func configHash(file string, cfg *config.Config) string {
	h := sha256.New()
	if file != "" {
		b, _ := os.ReadFile(file)
		h.Write(b)
	}
	for _, p := range cfg.Plugins {
		b, _ := os.ReadFile(p.Path)
		sum := sha256.Sum256(b)
		h.Write(sum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashValue(hexHash string) float64 {
	b, _ := hex.DecodeString(hexHash)
	if len(b) < 8 {
		return 0
	}
	return float64(binary.BigEndian.Uint64(b[:8]) >> 16)
}

// run handles SIGHUP and, with watch, polls the files each second, until ctx
// ends.
// hup is notified of SIGHUP from the start of the command on, so a SIGHUP
// during start is a reload once running, not lost.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal, watch bool) {
	var tick <-chan time.Time
	last := ""
	if watch {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
		last = r.fingerprint()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload(ctx, "sighup")
		case <-tick:
			// A change is acted on once the files stayed the same for a
			// whole second: an editor or a copy may write in steps.
			if fp := r.fingerprint(); fp != last {
				last = fp
				for {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Second):
					}
					if fp2 := r.fingerprint(); fp2 != last {
						last = fp2
						continue
					}
					break
				}
				r.reload(ctx, "watch")
			}
		}
	}
}

// fingerprint is the size and modification time of the configuration file
// and of every module of the running pipeline.
func (r *reloader) fingerprint() string {
	var b strings.Builder
	files := []string{r.cf.path()}
	r.mu.Lock()
	for _, p := range r.running.Plugins {
		files = append(files, p.Path)
	}
	r.mu.Unlock()
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s %d %d\n", f, st.Size(), st.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&b, "%s missing\n", f)
		}
	}
	return b.String()
}

// reload loads the configuration again and swaps in its pipeline.
func (r *reloader) reload(ctx context.Context, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	fail := func(err error) {
		r.reloads.WithLabelValues("failure").Inc()
		r.logger.Error("config_reload_failed", slog.String("reason", reason), slog.String("error", err.Error()),
			slog.String("detail", "the running pipeline is kept"))
	}
	cfg, _, err := r.cf.loadOrigins(false)
	if err != nil {
		fail(err)
		return
	}
	for i, p := range cfg.Plugins {
		for _, s := range p.Sinks {
			if _, ok := r.running.Sinks[s]; !ok {
				fail(fmt.Errorf("plugins[%d] (%s) emits to sink %q, which the running process does not have: sinks cannot change live, restart to add one", i, p.Name, s))
				return
			}
		}
	}
	if kept := fixedSettings(&r.running, &cfg); len(kept) > 0 {
		r.logger.Warn("config_reload_settings_kept", slog.Any("keys", kept),
			slog.String("detail", "these settings cannot change while running and keep their values; restart to apply them"))
	}
	hash := configHash(r.cf.path(), &cfg)
	pipeline, err := loadPipeline(ctx, &cfg, r.logger)
	if err != nil {
		fail(err)
		return
	}
	r.proc.Reload(pipeline)
	r.running.Plugins = cfg.Plugins
	r.hash = hash
	r.hashG.Set(hashValue(hash))
	r.reloads.WithLabelValues("success").Inc()
	r.logger.Info("config_reloaded", slog.String("reason", reason), slog.String("config_sha256", hash),
		slog.Int("plugins", len(cfg.Plugins)), slog.Float64("duration_seconds", time.Since(start).Seconds()))
}

// fixedSettings lists the keys outside plugins whose value differs between
// the running configuration and the new one.
func fixedSettings(old, new *config.Config) []string {
	values := func(c *config.Config) map[string]string {
		m := map[string]string{}
		o := *c
		o.Plugins = nil
		flattenConfig("", reflect.ValueOf(o), func(k, v string) { m[k] = v })
		return m
	}
	a, b := values(old), values(new)
	var out []string
	for k, v := range b {
		if a[k] != v {
			out = append(out, k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
