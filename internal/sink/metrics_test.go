package sink_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/sink"
)

func TestMetricsBySink(t *testing.T) {
	e := newEndpoint(t, func(_ int, r request, w http.ResponseWriter) {
		if strings.Contains(string(r.body), "m-0001") {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	reg := prometheus.NewRegistry()
	m := sink.NewMetrics(reg)
	h, err := sink.NewHTTP("hook", sink.HTTPConfig{URL: e.srv.URL}, nil)
	require.NoError(t, err)
	s := m.Instrument("hook", h)
	require.Error(t, s.Write(context.Background(), items(3, "m")))
	assert.Equal(t, 2.0, testutil.ToFloat64(m.Writes.WithLabelValues("hook")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.Errors.WithLabelValues("hook")))
	n, err := testutil.GatherAndCount(reg, "auditproc_sink_latency_seconds")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}
