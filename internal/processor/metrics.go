package processor

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproc/auditproc/host"
	extsink "github.com/auditproc/auditproc/internal/sink"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the processor's Prometheus metrics, on a registry of their own
// (no global registry), served at /metrics.
type Metrics struct {
	Registry *prometheus.Registry

	pluginsOnce sync.Once
	plugins     watchedPlugins

	Read           prometheus.Counter
	Verified       prometheus.Counter
	Tampered       *prometheus.CounterVec // by reason
	Verdicts       *prometheus.CounterVec // by plugin, verdict
	PluginLatency  *prometheus.HistogramVec
	Acked          prometheus.Counter
	DeadLettered   *prometheus.CounterVec // by reason
	Reclaimed      prometheus.Counter
	DeletedPending prometheus.Counter
	Emitted        *prometheus.CounterVec   // by sink
	RedisErrors    *prometheus.CounterVec   // by operation
	SinkErrors     *prometheus.CounterVec   // by sink: failed writes (each retried or refused)
	SinkWrites     *prometheus.CounterVec   // by sink: events the sink confirmed
	SinkLatency    *prometheus.HistogramVec // by sink: one write
	LateAcks       prometheus.Counter
	GroupRecreated prometheus.Counter
	SequenceGaps   prometheus.Counter
	// KeyringMismatch is 1 per key id under suspicion of a keyring
	// mismatch (keyring.go), 0 once cleared.
	KeyringMismatch *prometheus.GaugeVec
	Pending         prometheus.Gauge
	Lag             prometheus.Gauge
	Ready           prometheus.Gauge
	LastRead        prometheus.Gauge
}

// NewMetrics creates and registers every metric.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_entries_read_total", Help: "Stream entries read (new, own pending and reclaimed).",
		}),
		Verified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_entries_verified_total", Help: "Entries whose signature verified.",
		}),
		Tampered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_entries_tampered_total", Help: "Entries refused by verification, by reason; never handed to a plugin.",
		}, []string{"reason"}),
		Verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_plugin_verdicts_total", Help: "Verdicts returned by each plugin.",
		}, []string{"plugin", "verdict"}),
		PluginLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "auditproc_plugin_duration_seconds",
			Help:    "Time one plugin took for one event.",
			Buckets: []float64{1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 5e-2, 0.25, 1},
		}, []string{"plugin"}),
		Acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_entries_acked_total", Help: "Entries acknowledged after the whole pipeline succeeded (ok or drop).",
		}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_entries_dead_lettered_total", Help: "Entries moved to the dead-letter stream, by reason.",
		}, []string{"reason"}),
		Reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_entries_reclaimed_total", Help: "Pending entries claimed from idle consumers.",
		}),
		DeletedPending: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_entries_deleted_while_pending_total", Help: "Pending entries found deleted or trimmed from the stream before they were processed (integrity alarm).",
		}),
		Emitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_emits_total", Help: "Derived events committed to sinks.",
		}, []string{"sink"}),
		RedisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_redis_errors_total", Help: "Failed Redis operations, by operation.",
		}, []string{"op"}),
		LateAcks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_late_acks_total", Help: "Acks that found the entry no longer pending for this consumer (claimed by another replica meanwhile).",
		}),
		GroupRecreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_consumer_group_recreated_total", Help: "Times the stream or consumer group was found deleted and recreated (integrity alarm).",
		}),
		SequenceGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproc_sequence_gaps_total", Help: "Holes in a chained source's sequence numbers still open after integrity.gap_grace (audit_sequence_gap; integrity alarm).",
		}),
		KeyringMismatch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "auditproc_keyring_mismatch_suspected", Help: "1 while most new entries naming this key id fail their signature (keyring_mismatch_suspected): this replica likely holds other bytes under the id; its refused entries stay pending and the replica is not ready.",
		}, []string{"key_id"}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproc_pending_entries", Help: "Entries pending in the consumer group (all consumers).",
		}),
		Lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproc_consumer_group_lag", Help: "Entries in the stream not yet delivered to the group.",
		}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproc_ready", Help: "1 while Redis answers, the loop runs and no keyring mismatch is suspected.",
		}),
		LastRead: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproc_last_read_timestamp_seconds", Help: "Unix time when a read of the stream last succeeded (with entries or empty).",
		}),
	}
	// The sink metrics are defined by the sink package, for every sink that
	// is written before the ack (file, stdout and the external ones).
	sm := extsink.NewMetrics(r)
	m.SinkErrors, m.SinkWrites, m.SinkLatency = sm.Errors, sm.Writes, sm.Latency
	r.MustRegister(m.Read, m.Verified, m.Tampered, m.Verdicts, m.PluginLatency, m.Acked,
		m.DeadLettered, m.Reclaimed, m.DeletedPending, m.Emitted,
		m.RedisErrors, m.LateAcks, m.GroupRecreated, m.SequenceGaps, m.KeyringMismatch, m.Pending, m.Lag, m.Ready, m.LastRead,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchPlugins exports the plugins' instance counters, read at scrape time.
//
// A later call (a reload) replaces the plugins watched.
func (m *Metrics) WatchPlugins(plugins []*host.Plugin) {
	m.pluginsOnce.Do(func() { m.Registry.MustRegister(&m.plugins) })
	list := pluginCollector(plugins)
	m.plugins.list.Store(&list)
}

var (
	restartsDesc = prometheus.NewDesc("auditproc_plugin_instance_restarts_total",
		"Plugin instances discarded or recycled, by cause (trap, deadline, exit, …).", []string{"plugin", "cause"}, nil)
	instancesDesc = prometheus.NewDesc("auditproc_plugin_instances",
		"Plugin instances open now.", []string{"plugin"}, nil)
)

type pluginCollector []*host.Plugin

// watchedPlugins collects the plugins of the pipeline running now.
type watchedPlugins struct {
	list atomic.Pointer[pluginCollector]
}

func (w *watchedPlugins) Describe(ch chan<- *prometheus.Desc) {
	ch <- restartsDesc
	ch <- instancesDesc
}

func (w *watchedPlugins) Collect(ch chan<- prometheus.Metric) {
	c := w.list.Load()
	if c == nil {
		return
	}
	for _, p := range *c {
		st := p.Stats()
		for cause, n := range st.Restarts {
			ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, float64(n), p.Name(), cause.String())
		}
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(st.Live), p.Name())
	}
}
