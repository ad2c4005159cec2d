package hosttest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/host/hosttest"
)

// TestGuardStopsRunaways checks that the default deadline guard (the meter)
// stops each kind of runaway guest near its deadline: an empty loop, a
// standard-Go loop, recursion without loops and a loop of large bulk
// fills. The bound is loose (the deadline is 100 ms, the limit 3 s) so a
// busy machine does not fail it; a guard that missed the case would hang or
// take many seconds (fill-loop uncharged: 4096 fills of 64 MiB between checks).
func TestGuardStopsRunaways(t *testing.T) {
	for _, fixture := range []string{"loop", "loop-go", "fib", "fill-loop"} {
		t.Run(fixture, func(t *testing.T) {
			spec := fixtureSpec(t, fixture)
			spec.Deadline = 100 * time.Millisecond
			spec.MemoryLimitBytes = 80 << 20 // fill-loop's 64 MiB
			p := hosttest.Load(t, spec, host.Config{})
			assert.Equal(t, host.GuardMetered, p.Guard())
			w := hosttest.NewWorker(t, host.NewPipeline(p))

			start := time.Now()
			res := w.Process(context.Background(), hosttest.Event("bad", boomEvent))
			elapsed := time.Since(start)
			require.ErrorIs(t, res.Err, host.ErrDeadline)
			assert.Less(t, elapsed, 3*time.Second, "stopped near its 100ms deadline")
			t.Logf("%s stopped after %s", fixture, elapsed)
		})
	}
}

func TestGuardModes(t *testing.T) {
	spec := fixtureSpec(t, "tag")
	assert.Equal(t, host.GuardMetered, hosttest.Load(t, spec, host.Config{}).Guard())
	spec.Trusted = true
	assert.Equal(t, host.GuardOff, hosttest.Load(t, spec, host.Config{}).Guard())
	assert.Equal(t, "metered", host.GuardMetered.String())
	assert.Equal(t, "off", host.GuardOff.String())
}
