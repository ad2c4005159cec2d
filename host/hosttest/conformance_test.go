package hosttest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// recorder is a testing.TB that records failures instead of failing the
// test, so a test can show that a check fails for a faulty plugin.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any)                 { r.Errorf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fail()                             { r.Errorf("Fail") }
func (r *recorder) FailNow()                          { r.Fail(); runtime.Goexit() }
func (r *recorder) Fatal(args ...any)                 { r.Error(args...); runtime.Goexit() }
func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...); runtime.Goexit() }
func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errors) > 0
}

// failures runs check with a recorder and returns what it reported.
func failures(t *testing.T, check func(tb testing.TB)) string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(r)
	}()
	<-done
	return strings.Join(r.errors, "\n")
}

func TestConformanceWellBehavedFixture(t *testing.T) {
	Conformance(t, host.PluginSpec{Name: "tag", Path: wasmtest.Path(t, "tag"), Sinks: []string{"audit"}, Config: []byte(`{"team":"qa"}`)})
}

// The suite must be able to fail: each faulty plugin below breaks exactly
// the check named, and the check reports it.
func TestConformanceCatchesFaultyPlugins(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		spec    host.PluginSpec
		opts    []Option
		check   func(*suite, testing.TB)
		want    string
	}{
		{
			name:    "output leaks into the next event",
			fixture: "leaky",
			check:   (*suite).checkNoLeakage,
			want:    "carries a value of the event before it",
		},
		{
			name:    "output depends on the previous event",
			fixture: "leaky",
			check:   (*suite).checkNoLeakage,
			want:    "depends on the event before it",
		},
		{
			name:    "a batch event makes it loop",
			fixture: "loop",
			opts:    []Option{WithEvents(`{"event_id":"x","boom":true}`)},
			check:   (*suite).checkBatch,
			want:    "exceeded its deadline",
		},
		{
			name:    "a batch event makes it trap",
			fixture: "trap-process",
			opts:    []Option{WithEvents(`{"event_id":"x","boom":true}`)},
			check:   (*suite).checkBatch,
			want:    "plugin trapped",
		},
		{
			name:    "it traps on a large event",
			fixture: "alloc-trap",
			check:   (*suite).checkAtLimit,
			want:    "plugin trapped",
		},
		{
			name:    "it answers an invalid verdict",
			fixture: "bad-verdict",
			opts:    []Option{WithEvents(`{"event_id":"x","boom":true}`)},
			check:   (*suite).checkBatch,
			want:    "invalid verdict 7",
		},
		{
			name:    "an instance was discarded",
			fixture: "trap-process",
			opts:    []Option{WithEvents(`{"event_id":"x","boom":true}`)},
			check:   func(s *suite, tb testing.TB) { s.checkBatch(&recorder{TB: tb}); s.checkInstances(tb) },
			want:    "discarded or recycled for trap",
		},
		{
			name:    "it emits to a sink it was not granted",
			fixture: "tag",
			check:   func(s *suite, tb testing.TB) { s.spec.Sinks = nil; s.checkEmpty(tb) },
			spec:    host.PluginSpec{Sinks: []string{"audit"}},
			want:    "emit to a sink not granted",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.Name = tt.fixture
			spec.Path = wasmtest.Path(t, tt.fixture)
			s := newSuite(t, spec, tt.opts...)
			got := failures(t, func(tb testing.TB) { tt.check(s, tb) })
			require.NotEmpty(t, got, "the check passed a faulty plugin")
			assert.Contains(t, got, tt.want)
		})
	}
}
