package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGCPercentFor(t *testing.T) {
	const MiB = 1 << 20
	for _, tt := range []struct {
		live uint64
		want int
	}{
		{0, 100},         // nothing measured yet: Go's default
		{4 * MiB, 600},   // a small heap gets the 24 MiB floor
		{24 * MiB, 100},  // the floor equals the default's headroom
		{32 * MiB, 75},   // 24 MiB of headroom
		{48 * MiB, 50},   // from here on half of the live heap
		{56 * MiB, 50},   // the default pipeline with two workers
		{1024 * MiB, 50}, // never below half
	} {
		assert.Equal(t, tt.want, gcPercentFor(tt.live), "live %d MiB", tt.live/MiB)
	}
}

func TestTuneGCOperatorSettingsWin(t *testing.T) {
	for _, env := range []map[string]string{{"GOGC": "200"}, {"GOMEMLIMIT": "1GiB"}, {"GOGC": "off"}} {
		stop := tuneGC(func(k string) string { return env[k] })
		assert.Nil(t, stop, "%v: the operator's setting is left alone", env)
	}
}

func gogcNow(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	require.Equal(t, metrics.KindUint64, s[0].Value.Kind())
	return int(s[0].Value.Uint64())
}

func TestTuneGCFollowsTheLiveHeap(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)

	stop := tuneGC(func(string) string { return "" })
	require.NotNil(t, stop)
	defer stop()

	// Tens of MiB that stay live, like a pipeline's instances: after the
	// next collections the headroom shrinks from the default's 100 %.
	live := make([][]byte, 0, 80)
	for range 80 {
		live = append(live, make([]byte, 1<<20))
	}
	waitGOGC(t, func(p int) bool { return p < 100 })

	assert.GreaterOrEqual(t, gogcNow(t), 50)

	// Once that memory is gone the small heap gets more than the default.
	runtime.KeepAlive(live)
	live = nil
	waitGOGC(t, func(p int) bool { return p > 100 })

	// After stop the setting is Go's again.
	stop()
	assert.Equal(t, 100, gogcNow(t))
}

func waitGOGC(t *testing.T, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(gogcNow(t)) {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC stayed %d", gogcNow(t))
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
