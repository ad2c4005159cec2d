package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The garbage collector's headroom while auditproc runs: half of the live
// heap, but at least gcMinHeadroom.
//
// Most of a running auditproc's heap lives as long as the process: the
// plugins' linear memories (about 3 MB per standard-Go instance, one per
// plugin and worker) and wazero's decoded modules. With Go's default the
// heap grows to twice that before each collection: the default pipeline
// with two workers kept about 56 MiB live and let the heap reach 110 MiB.
// With half it stays near 84 MiB, for a few more collections (each one
// marks mostly pointer-free linear memory). A quarter kept it lower still,
// but doubled the p99 latency at 10,000 events/s (docs/performance.md).
//
// A small heap (no plugins, C plugins: 5 MiB live) gets more than Go's
// default, whose headroom of 5 MiB meant a collection every 4,000 or so
// events: verify-only ran 18 % faster with 24 MiB (163-168k -> 195-200k
// entries/s, CPU 5.8 -> 4.7 µs per entry, RSS 22 -> 33 MiB).
const (
	gcMinHeadroom    = 24 << 20
	gcDefaultPercent = 100
	liveHeapMetric   = "/gc/heap/live:bytes"
)

// gcPercentFor returns the GOGC value that gives a live heap of live bytes
// its headroom.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return gcDefaultPercent
	}
	return int(max(live/2, gcMinHeadroom) * 100 / live)
}

// tuneGC sets GOGC after every collection from the live heap it left (see
// gcPercentFor), unless the operator set GOGC or GOMEMLIMIT in the
// environment: their setting is then Go's, untouched, and tuneGC returns
// nil. stop ends the tuning and restores Go's default.
func tuneGC(getenv func(string) string) (stop func()) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return nil
	}
	t := &gcTuner{sample: []metrics.Sample{{Name: liveHeapMetric}}}
	t.arm()
	return t.stop
}

type gcTuner struct {
	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
}

// gcSentinel is garbage as soon as it is made: its finalizer runs after the
// next collection and arms a new one.
type gcSentinel struct{ t *gcTuner }

func (t *gcTuner) arm() {
	runtime.SetFinalizer(&gcSentinel{t}, func(s *gcSentinel) { s.t.collected() })
}

func (t *gcTuner) collected() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	if v := t.sample[0].Value; v.Kind() == metrics.KindUint64 {
		debug.SetGCPercent(gcPercentFor(v.Uint64()))
	}
	t.arm()
}

func (t *gcTuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(gcDefaultPercent)
	}
}
