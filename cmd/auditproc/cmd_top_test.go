package main

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTopQuantile(t *testing.T) {
	before := map[float64]float64{0.001: 0, 0.01: 0, 0.1: 0, 1: 0, math.Inf(1): 0}
	// 100 observations: 90 under 1 ms, 9 between 1 and 10 ms, 1 between 10 and 100 ms.
	after := map[float64]float64{0.001: 90, 0.01: 99, 0.1: 100, 1: 100, math.Inf(1): 100}
	p50, ok := quantile(0.5, before, after)
	assert.True(t, ok)
	assert.InDelta(t, 0.5*0.001*100/90, p50, 1e-9)
	p99, _ := quantile(0.99, before, after)
	assert.InDelta(t, 0.01, p99, 1e-9)
	_, ok = quantile(0.5, after, after)
	assert.False(t, ok, "no observations in between")
}
