package sink_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/sink"
)

func TestMetricsNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := sink.NewMetrics(reg)
	m.Writes.WithLabelValues("archive").Add(3)
	m.Errors.WithLabelValues("archive").Inc()
	m.Latency.WithLabelValues("archive").Observe(0.01)
	n, err := testutil.GatherAndCount(reg, "auditproc_sink_writes_total", "auditproc_sink_errors_total", "auditproc_sink_latency_seconds")
	require.NoError(t, err)
	assert.Equal(t, 3, n, "one series each, labelled by sink")
}
