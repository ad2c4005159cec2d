package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/redisconn"
)

func topCommand() *command {
	var (
		cf       *configFlags
		once     bool
		interval = durationFlag(time.Second)
		replicas stringList
	)
	return &command{
		name:    "top",
		summary: "live view of lag, rates, pending, dead letters and per-plugin verdicts and latency, per replica",
		usage:   "[--once] [--interval 1s] [--metrics HOST:PORT]... [flags]",
		examples: `  auditproc top
  auditproc top --metrics 10.0.0.5:9464 --metrics 10.0.0.6:9464
  auditproc top --once        # one frame as text, for scripts and tests

The stream, group and dead-letter stream come from Redis (the configuration's
Redis and stream settings); rates, verdicts and latencies from each replica's
/metrics (--metrics, repeatable; default the configured metrics.address, a
wildcard host asked on 127.0.0.1). Rates and latencies are over the last
interval: --once samples twice, one interval apart, and prints one frame.
The view refreshes every interval until interrupted (Ctrl-C or SIGTERM, exit
0): in place on a terminal, one frame after another, separated by a blank
line, when the output is a pipe or a file.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.BoolVar(&once, "once", false, "print one frame as plain text and exit")
			fs.Var(&interval, "interval", "refresh period and window of the rates, a `duration` with a unit")
			fs.Var(&replicas, "metrics", "a replica's metrics `HOST:PORT` (repeatable; default the configured metrics.address)")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("top takes no arguments, got %q", args)
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			targets := []string(replicas)
			if len(targets) == 0 && cfg.Metrics.Address != "" {
				targets = []string{cfg.Metrics.Address}
			}
			for i, a := range targets {
				if targets[i], err = healthTarget(a, ""); err != nil {
					return usageError{err}
				}
			}
			rdb, _, err := redisconn.New(&cfg)
			if err != nil {
				return usageError{err}
			}
			defer rdb.Close()
			v := &topView{rdb: rdb, stream: shardsLabel(cfg.Stream.Name, cfg.ShardCount()), group: cfg.Stream.Group,
				streams: cfg.StreamShards(), dlqs: cfg.DeadLetterShards(), targets: targets}
			// Rates need two samples: the first frame comes one interval
			// after the first sample.
			prev := v.sample(ctx)
			if !sleep(ctx, time.Duration(interval)) {
				return nil
			}
			draw := func(ctx context.Context, w io.Writer) error {
				cur := v.sample(ctx)
				v.render(w, prev, cur)
				prev = cur
				return nil
			}
			if once {
				return draw(ctx, sio.out)
			}
			return refresh(ctx, sio.out, time.Duration(interval), screens, draw)
		},
	}
}

type topView struct {
	rdb     redis.UniversalClient
	stream  string // as configured, for the header
	group   string
	streams []string // every shard's audit stream
	dlqs    []string // every shard's dead-letter stream
	targets []string
}

// topSample is what one refresh reads.
type topSample struct {
	at       time.Time
	length   int64
	lag      int64
	lagKnown bool
	pending  int64
	dead     int64
	redisErr error
	replicas []replicaSample
}

type replicaSample struct {
	addr     string
	err      error
	families map[string]*dto.MetricFamily
}

func (v *topView) sample(ctx context.Context) topSample {
	s := topSample{at: time.Now()}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// Sums over the shards; the lag is known once every shard's group is.
	s.lagKnown = true
	for k, stream := range v.streams {
		n, err := v.rdb.XLen(rctx, stream).Result()
		if err != nil && s.redisErr == nil {
			s.redisErr = err
		}
		s.length += n
		d, err := v.rdb.XLen(rctx, v.dlqs[k]).Result()
		if err != nil && s.redisErr == nil {
			s.redisErr = err
		}
		s.dead += d
		groups, err := v.rdb.XInfoGroups(rctx, stream).Result()
		if err != nil && !isNoSuchKey(err) && s.redisErr == nil {
			s.redisErr = err
		}
		i := slices.IndexFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == v.group })
		if i < 0 {
			s.lagKnown = false
			continue
		}
		if groups[i].Lag < 0 {
			s.lagKnown = false // Redis cannot tell on this shard
		}
		s.lag += groups[i].Lag
		s.pending += groups[i].Pending
	}
	for _, t := range v.targets {
		s.replicas = append(s.replicas, scrape(ctx, t))
	}
	return s
}

func scrape(ctx context.Context, addr string) replicaSample {
	r := replicaSample{addr: addr}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		r.err = err
		return r
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.err = fmt.Errorf("/metrics answered %s", resp.Status)
		return r
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	r.families, r.err = p.TextToMetricFamilies(io.LimitReader(resp.Body, 32<<20))
	return r
}

// value sums the samples of a counter or gauge family whose labels include
// match.
func value(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, m := range f.GetMetric() {
		if !labelsMatch(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Untyped != nil:
			total += m.Untyped.GetValue()
		}
	}
	return total
}

func labelsMatch(m *dto.Metric, match map[string]string) bool {
	for k, want := range match {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == want {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// labelValues lists the values of label in a family, sorted.
func labelValues(fams map[string]*dto.MetricFamily, name, label string) []string {
	set := map[string]bool{}
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					set[l.GetValue()] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// buckets returns a histogram's cumulative bucket counts by upper bound.
func buckets(fams map[string]*dto.MetricFamily, name string, match map[string]string) map[float64]float64 {
	out := map[float64]float64{}
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			if m.Histogram == nil || !labelsMatch(m, match) {
				continue
			}
			hasInf := false
			for _, b := range m.Histogram.GetBucket() {
				out[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				hasInf = hasInf || math.IsInf(b.GetUpperBound(), 1)
			}
			// The text format carries the +Inf bucket; a histogram
			// without one has its count as that bucket.
			if !hasInf {
				out[math.Inf(1)] += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// quantile estimates the q-quantile of the observations between two
// cumulative bucket snapshots, interpolating linearly within a bucket as
// Prometheus's histogram_quantile does. ok is false without observations.
func quantile(q float64, before, after map[float64]float64) (float64, bool) {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0, false
	}
	total := after[math.Inf(1)] - before[math.Inf(1)]
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	lower, prevCount := 0.0, 0.0
	for _, b := range bounds {
		c := after[b] - before[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return lower, true
			}
			if c == prevCount {
				return b, true
			}
			return lower + (b-lower)*(rank-prevCount)/(c-prevCount), true
		}
		lower, prevCount = b, c
	}
	return lower, true
}

func (v *topView) render(w io.Writer, prev, cur topSample) {
	secs := cur.at.Sub(prev.at).Seconds()
	rate := func(name string, match map[string]string, i int) float64 {
		if secs <= 0 || i >= len(prev.replicas) || prev.replicas[i].families == nil || cur.replicas[i].families == nil {
			return 0
		}
		d := value(cur.replicas[i].families, name, match) - value(prev.replicas[i].families, name, match)
		return math.Max(0, d) / secs
	}
	fmt.Fprintf(w, "auditproc top — %s  stream %s  group %s  (rates over %.1fs)\n\n", cur.at.UTC().Format(time.RFC3339), v.stream, v.group, secs)
	if cur.redisErr != nil {
		fmt.Fprintf(w, "redis: %v\n", cur.redisErr)
	}
	lag := "-"
	if cur.lagKnown {
		lag = fmt.Sprint(cur.lag)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM LENGTH\tLAG\tPENDING\tDLQ LENGTH\tIN/s\tOUT/s")
	in, out := 0.0, 0.0
	for i := range cur.replicas {
		in += rate("auditproc_entries_read_total", nil, i)
		out += rate("auditproc_entries_acked_total", nil, i)
	}
	fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.1f\t%.1f\n", cur.length, lag, cur.pending, cur.dead, in, out)
	_ = tw.Flush()

	fmt.Fprintln(w, "\nREPLICAS")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tREADY\tREAD/s\tACKED/s\tDEAD/s\tTAMPERED/s\tRESTARTS")
	if len(cur.replicas) == 0 {
		fmt.Fprintln(tw, "(no metrics address: give --metrics HOST:PORT)")
	}
	for i, r := range cur.replicas {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\tunreachable: %v\n", r.addr, r.err)
			continue
		}
		ready := "no"
		if value(r.families, "auditproc_ready", nil) == 1 {
			ready = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\n", r.addr, ready,
			rate("auditproc_entries_read_total", nil, i), rate("auditproc_entries_acked_total", nil, i),
			rate("auditproc_entries_dead_lettered_total", nil, i), rate("auditproc_entries_tampered_total", nil, i),
			value(r.families, "auditproc_plugin_instance_restarts_total", nil))
	}
	_ = tw.Flush()

	fmt.Fprintln(w, "\nPLUGINS (all replicas)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tOK/s\tDROP/s\tRETRY/s\tREJECT/s\tP50\tP99")
	plugins := map[string]bool{}
	for _, r := range cur.replicas {
		for _, p := range labelValues(r.families, "auditproc_plugin_verdicts_total", "plugin") {
			plugins[p] = true
		}
	}
	names := make([]string, 0, len(plugins))
	for p := range plugins {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		var verdicts [4]float64
		before, after := map[float64]float64{}, map[float64]float64{}
		for i := range cur.replicas {
			for j, vd := range []string{"ok", "drop", "retry", "reject"} {
				verdicts[j] += rate("auditproc_plugin_verdicts_total", map[string]string{"plugin": p, "verdict": vd}, i)
			}
			if i < len(prev.replicas) {
				for b, c := range buckets(prev.replicas[i].families, "auditproc_plugin_duration_seconds", map[string]string{"plugin": p}) {
					before[b] += c
				}
			}
			for b, c := range buckets(cur.replicas[i].families, "auditproc_plugin_duration_seconds", map[string]string{"plugin": p}) {
				after[b] += c
			}
		}
		p50, p99 := "-", "-"
		if q, ok := quantile(0.5, before, after); ok {
			p50 = formatSeconds(q)
		}
		if q, ok := quantile(0.99, before, after); ok {
			p99 = formatSeconds(q)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\n", p, verdicts[0], verdicts[1], verdicts[2], verdicts[3], p50, p99)
	}
	if len(names) == 0 {
		fmt.Fprintln(tw, "(no verdicts yet)")
	}
	_ = tw.Flush()
}

func formatSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(100 * time.Nanosecond).String()
	}
}
