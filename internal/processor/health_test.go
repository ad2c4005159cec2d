package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/processor"
)

// TestReadyGauge: auditproc_ready says what /readyz says — 1 while Redis
// answers and the loop runs, 0 before and after.
func TestReadyGauge(t *testing.T) {
	f := newAckFixture(t)
	m := processor.NewMetrics()
	p, err := processor.New(processor.Config{
		Stream: f.stream, Group: "g", Consumer: "c", DeadLetter: "acks:dead", Block: 50 * time.Millisecond,
	}, nil, f.bus, host.NewPipeline(), m)
	require.NoError(t, err)
	gauge := func() float64 { return testutil.ToFloat64(m.Ready) }
	assert.False(t, p.Ready())
	assert.Zero(t, gauge())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, p.Ready, 5*time.Second, time.Millisecond)
	assert.InDelta(t, 1, gauge(), 0, "ready, and the gauge says so")
	cancel()
	require.NoError(t, <-done)
	assert.False(t, p.Ready())
	assert.Zero(t, gauge())
}
