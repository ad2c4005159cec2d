package host_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// TestMain builds the modules first, so that the examples (which get no
// testing.TB for wasmtest) find them too.
func TestMain(m *testing.M) {
	cmd := exec.Command(filepath.Join(".", "scripts", "build-plugins.sh"))
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build plugins: %v\n%s", err, out)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// event300 is a realistic audit event of about 300 bytes.
var event300 = []byte(`{"event_id":"01J9Z8K3V6Q2W4E5R6T7Y8U9I0","time":"2024-10-05T12:34:56.789Z","actor":{"id":"u-1842","name":"alice","ip":"203.0.113.7"},"action":"user.login","target":{"type":"session","id":"s-99af"},"outcome":"success","meta":{"ua":"Mozilla/5.0 (X11; Linux x86_64)","mfa":true,"region":"eu-west-1"}}`)

func testEvent(data []byte) host.Event {
	return host.Event{
		EntryID:    "1700000000000-0",
		Stream:     "audit:stream",
		KeyID:      "k1",
		EventID:    "01J9Z8K3V6Q2W4E5R6T7Y8U9I0",
		Deliveries: 1,
		Data:       data,
	}
}

// load loads the built fixture or example name with spec's other fields.
func load(t testing.TB, name string, spec host.PluginSpec) *host.Plugin {
	t.Helper()
	spec.Path = wasmtest.Path(t, name)
	if spec.Name == "" {
		spec.Name = name
	}
	p, err := host.Load(context.Background(), spec, host.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func worker(t testing.TB, plugins ...*host.Plugin) *host.Worker {
	t.Helper()
	w, err := host.NewPipeline(plugins...).NewWorker(context.Background())
	require.NoError(t, err)
	t.Cleanup(w.Release)
	return w
}

// call drives the host-call fixture: op, arg (event_id), val (stream), num
// (deliveries). It returns the guest's i32 result and the bytes event_get
// wrote.
func call(t *testing.T, w *host.Worker, data []byte, op byte, arg, val string, num uint32) (host.Result, int32, string) {
	t.Helper()
	res := w.Process(context.Background(), host.Event{KeyID: string(op), EventID: arg, Stream: val, Deliveries: num, Data: data})
	if res.Verdict != abi.VerdictOK || len(res.Message) < 4 {
		t.Logf("host-call %c: %v %q %v", op, res.Verdict, res.Message, res.Err)
		return res, 0, ""
	}
	return res, int32(binary.LittleEndian.Uint32([]byte(res.Message))), res.Message[4:]
}

func TestNoopPluginsPassEventsUnchanged(t *testing.T) {
	for _, name := range []string{"noop-c", "noop-go"} {
		for _, trusted := range []bool{false, true} {
			t.Run(name, func(t *testing.T) {
				p := load(t, name, host.PluginSpec{Trusted: trusted})
				w := worker(t, p)
				for range 3 {
					res := w.Process(context.Background(), testEvent(event300))
					require.NoError(t, res.Err)
					assert.Equal(t, abi.VerdictOK, res.Verdict)
					assert.Equal(t, string(event300), string(res.Event))
					assert.Empty(t, res.Emits)
					require.Len(t, res.Timings, 1)
					assert.Equal(t, name, res.Timings[0].Plugin)
					assert.Positive(t, res.Timings[0].Duration)
				}
			})
		}
	}
}

func TestDeadlineStopsARunawayGuest(t *testing.T) {
	const deadline = 50 * time.Millisecond
	for _, name := range []string{"loop", "loop-go"} {
		t.Run(name, func(t *testing.T) {
			p := load(t, name, host.PluginSpec{Deadline: deadline})
			w := worker(t, p)
			start := time.Now()
			res := w.Process(context.Background(), testEvent([]byte(`{"x":"boom"}`)))
			elapsed := time.Since(start)
			assert.Equal(t, abi.VerdictRetry, res.Verdict)
			require.ErrorIs(t, res.Err, host.ErrDeadline)
			assert.Equal(t, name, res.Plugin)
			assert.GreaterOrEqual(t, elapsed, deadline)
			// deadline + one tick (deadline/8) + scheduling slack on a busy machine
			assert.Less(t, elapsed, deadline+deadline/8+500*time.Millisecond)

			res = w.Process(context.Background(), testEvent([]byte(`{"x":"fine"}`)))
			require.NoError(t, res.Err)
			assert.Equal(t, abi.VerdictOK, res.Verdict)
			assert.Equal(t, uint64(1), p.Stats().Restarts[host.CauseDeadline])
		})
	}
}
