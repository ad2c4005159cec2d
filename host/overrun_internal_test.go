package host

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// TestOverrunIsNeverOk: a call that returns past its deadline is a deadline
// failure even when nothing stopped it (the ticker had not run, no metered
// check came): here a quick call whose deadline had passed before it
// started, so only the worker's own look at the clock can see it. Under
// garbage collection the same happens to long calls: while a collection
// waits to stop the world for a goroutine running compiled guest code, the
// ticker stands still, and the call used to come back ok.
func TestOverrunIsNeverOk(t *testing.T) {
	for _, guard := range []struct {
		name    string
		trusted bool
	}{{"metered", false}, {"trusted", true}} {
		t.Run(guard.name, func(t *testing.T) {
			p, err := Load(context.Background(), PluginSpec{
				Name: "noop", Path: wasmtest.Path(t, "noop-c"), Deadline: 100 * time.Millisecond, Trusted: guard.trusted,
			}, Config{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close(context.Background()) })
			for range 20 {
				inst, err := p.getInstance(context.Background())
				require.NoError(t, err)
				ev := Event{EntryID: "1-0", Data: []byte(`{"a":1}`)}
				out := inst.process(context.Background(), &ev, ev.Data, time.Now().Add(-time.Second))
				if guard.trusted {
					// A trusted plugin has no deadline.
					require.NoError(t, out.err)
					assert.Equal(t, abi.VerdictOK, out.verdict)
					p.putIdle(inst)
					continue
				}
				require.Error(t, out.err, "a call that returned past its deadline came back %v", out.verdict)
				assert.True(t, errors.Is(out.err, ErrDeadline), "%v", out.err)
				assert.Equal(t, abi.VerdictRetry, out.verdict)
				assert.True(t, out.discard)
				inst.close(causeOf(out.err))
			}
		})
	}
}
