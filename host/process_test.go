package host_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

const doc = `{"a":{"b":"x","n":[1,{"c":true},3],"0":"zero"},"dot.key":1,"back\\slash":2,"*?|#@":3,"s":"v"}`

func TestEventGet(t *testing.T) {
	w := worker(t, load(t, "host-call", host.PluginSpec{}))
	tests := []struct {
		path string
		cap  uint32
		want int32
		out  string
	}{
		{path: "a.b", cap: 64, want: 3, out: `"x"`},
		{path: "a.n.1.c", cap: 64, want: 4, out: "true"},
		{path: "a.n.1", cap: 64, want: 10, out: `{"c":true}`},
		{path: "a.0", cap: 64, want: 6, out: `"zero"`}, // digits on an object are a key
		{path: `dot\.key`, cap: 64, want: 1, out: "1"},
		{path: `back\\slash`, cap: 64, want: 1, out: "2"},
		{path: "*?|#@", cap: 64, want: 1, out: "3"}, // no gjson wildcards or modifiers
		{path: "", cap: 200, want: int32(len(doc)), out: doc},
		{path: "a.b", cap: 2, want: 3, out: ""}, // too small: nothing written
		{path: "a.n.3", cap: 64, want: abi.ErrNotFound},
		{path: "a.zz", cap: 64, want: abi.ErrNotFound},
		{path: "a.#", cap: 64, want: abi.ErrNotFound},
		{path: "a..b", cap: 64, want: abi.ErrInvalid},
		{path: `a\b`, cap: 64, want: abi.ErrInvalid},
		{path: `a\`, cap: 64, want: abi.ErrInvalid},
		{path: "a.", cap: 64, want: abi.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res, r, out := call(t, w, []byte(doc), 'g', tt.path, "", tt.cap)
			require.NoError(t, res.Err)
			assert.Equal(t, tt.want, r)
			assert.Equal(t, tt.out, out)
			assert.Equal(t, doc, string(res.Event))
		})
	}
}

func TestEventSetAndDelete(t *testing.T) {
	w := worker(t, load(t, "host-call", host.PluginSpec{MaxEventBytes: 4096}))
	tests := []struct {
		name      string
		op        byte
		path, val string
		in        string
		want      int32
		out       string // the event afterwards
	}{
		{name: "replace", op: 's', path: "a.b", val: `"y"`, in: `{"a":{"b":"x"}}`, out: `{"a":{"b":"y"}}`},
		{name: "create objects", op: 's', path: "a.b.c", val: `1`, in: `{}`, out: `{"a":{"b":{"c":1}}}`},
		{name: "digits make keys", op: 's', path: "a.0", val: `1`, in: `{}`, out: `{"a":{"0":1}}`},
		{name: "index an array", op: 's', path: "a.1", val: `9`, in: `{"a":[1,2]}`, out: `{"a":[1,9]}`},
		{name: "append to an array", op: 's', path: "a.2", val: `3`, in: `{"a":[1,2]}`, out: `{"a":[1,2,3]}`},
		{name: "no padding", op: 's', path: "a.5", val: `3`, in: `{"a":[1,2]}`, want: abi.ErrInvalid, out: `{"a":[1,2]}`},
		{name: "key on an array", op: 's', path: "a.k", val: `3`, in: `{"a":[1,2]}`, want: abi.ErrInvalid, out: `{"a":[1,2]}`},
		{name: "into a scalar", op: 's', path: "a.k", val: `3`, in: `{"a":"s"}`, want: abi.ErrInvalid, out: `{"a":"s"}`},
		{name: "escaped dot", op: 's', path: `a\.b`, val: `true`, in: `{}`, out: `{"a.b":true}`},
		{name: "special chars", op: 's', path: `x*?:y`, val: `1`, in: `{}`, out: `{"x*?:y":1}`},
		{name: "leading colon", op: 's', path: `:k`, val: `1`, in: `{}`, out: `{":k":1}`},
		{name: "invalid json", op: 's', path: "a", val: `{nope`, in: `{}`, want: abi.ErrInvalid, out: `{}`},
		{name: "whole event", op: 's', path: "", val: `{"new":1}`, in: `{"a":1}`, out: `{"new":1}`},
		{name: "whole event not object", op: 's', path: "", val: `[1]`, in: `{"a":1}`, want: abi.ErrInvalid, out: `{"a":1}`},
		{name: "too large", op: 's', path: "big", val: `"` + strings.Repeat("x", 5000) + `"`, in: `{}`, want: abi.ErrLimit, out: `{}`},
		{name: "delete", op: 'd', path: "a.b", in: `{"a":{"b":1,"c":2}}`, out: `{"a":{"c":2}}`},
		{name: "delete array element", op: 'd', path: "a.0", in: `{"a":[1,2]}`, out: `{"a":[2]}`},
		{name: "delete digit key", op: 'd', path: "a.0", in: `{"a":{"0":1,"1":2}}`, out: `{"a":{"1":2}}`},
		{name: "delete missing", op: 'd', path: "a.x", in: `{"a":{}}`, want: abi.ErrNotFound, out: `{"a":{}}`},
		{name: "delete whole", op: 'd', path: "", in: `{"a":{}}`, want: abi.ErrInvalid, out: `{"a":{}}`},
		{name: "set_event", op: 'E', val: ` {"z":1}`, in: `{"a":1}`, out: ` {"z":1}`},
		{name: "set_event not object", op: 'E', val: `"s"`, in: `{"a":1}`, want: abi.ErrInvalid, out: `{"a":1}`},
		{name: "set_event too large", op: 'E', val: `{"x":"` + strings.Repeat("x", 5000) + `"}`, in: `{"a":1}`, want: abi.ErrLimit, out: `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, r, _ := call(t, w, []byte(tt.in), tt.op, tt.path, tt.val, 0)
			require.NoError(t, res.Err)
			assert.Equal(t, tt.want, r)
			assert.Equal(t, tt.out, string(res.Event))
		})
	}
}

func TestEmit(t *testing.T) {
	w := worker(t, load(t, "host-call", host.PluginSpec{Sinks: []string{"audit", "alerts"}, MaxEmits: 3, MaxEmitBytes: 64}))
	tests := []struct {
		name, sink, body string
		times            uint32
		want             int32
		emits            int
	}{
		{name: "granted", sink: "alerts", body: `{"a":1}`, times: 1, emits: 1},
		{name: "up to the limit", sink: "audit", body: `{"a":1}`, times: 3, emits: 3},
		{name: "past the limit", sink: "audit", body: `{"a":1}`, times: 4, want: abi.ErrLimit, emits: 3},
		{name: "not granted", sink: "other", body: `{"a":1}`, times: 1, want: abi.ErrNotGranted},
		{name: "not an object", sink: "audit", body: `[1]`, times: 1, want: abi.ErrInvalid},
		{name: "too large", sink: "audit", body: `{"a":"` + strings.Repeat("x", 64) + `"}`, times: 1, want: abi.ErrLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, r, _ := call(t, w, []byte(`{}`), 'e', tt.sink, tt.body, tt.times)
			require.NoError(t, res.Err)
			assert.Equal(t, tt.want, r)
			require.Len(t, res.Emits, tt.emits)
			for _, e := range res.Emits {
				assert.Equal(t, host.Emit{Plugin: "host-call", Sink: tt.sink, Event: []byte(tt.body)}, e)
			}
		})
	}
}

func TestVerdictsAndMessages(t *testing.T) {
	w := worker(t, load(t, "host-call", host.PluginSpec{}))
	long := strings.Repeat("m", 5000)
	for v := abi.VerdictOK; v <= abi.VerdictReject; v++ {
		res, _, _ := call(t, w, []byte(`{}`), 'm', "", "why "+v.String(), uint32(v))
		require.NoError(t, res.Err)
		assert.Equal(t, v, res.Verdict)
		if v != abi.VerdictOK {
			assert.Equal(t, "host-call", res.Plugin)
			assert.Equal(t, "why "+v.String(), res.Message)
		}
	}
	res, _, _ := call(t, w, []byte(`{}`), 'm', "", long, uint32(abi.VerdictReject))
	assert.Equal(t, long[:abi.DefaultMaxMessageBytes], res.Message)
}

// Each failure discards the instance, gives retry, and the next event on the
// same worker gets a fresh, working instance.
func TestFailuresReplaceTheInstance(t *testing.T) {
	boom := []byte(`{"x":"boom"}`)
	big := []byte(`{"x":"` + strings.Repeat("b", 5000) + `"}`)
	tests := []struct {
		fixture string
		spec    host.PluginSpec
		event   []byte
		err     error
		cause   host.Cause
	}{
		{fixture: "trap-process", event: boom, err: host.ErrTrap, cause: host.CauseTrap},
		{fixture: "recursion", spec: host.PluginSpec{Deadline: time.Minute}, event: boom, err: host.ErrTrap, cause: host.CauseTrap},
		{fixture: "recursion-c", event: boom, err: host.ErrTrap, cause: host.CauseTrap},
		{fixture: "panic-go", event: boom, err: host.ErrTrap, cause: host.CauseTrap},
		{fixture: "proc-exit", event: boom, err: host.ErrExit, cause: host.CauseExit},
		{fixture: "bad-verdict", event: boom, err: host.ErrInvalidVerdict, cause: host.CauseInvalidVerdict},
		{fixture: "alloc-zero", event: big, err: host.ErrGuestMemory, cause: host.CauseGuestMemory},
		{fixture: "alloc-oob", event: big, err: host.ErrGuestMemory, cause: host.CauseGuestMemory},
		{fixture: "alloc-trap", event: big, err: host.ErrTrap, cause: host.CauseTrap},
		{fixture: "membomb", spec: host.PluginSpec{MemoryLimitBytes: 4 << 20}, event: boom, err: host.ErrTrap, cause: host.CauseTrap},
		{fixture: "loop", spec: host.PluginSpec{Deadline: 20 * time.Millisecond}, event: boom, err: host.ErrDeadline, cause: host.CauseDeadline},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			p := load(t, tt.fixture, tt.spec)
			w := worker(t, p)
			res := w.Process(context.Background(), testEvent(tt.event))
			assert.Equal(t, abi.VerdictRetry, res.Verdict)
			assert.Equal(t, tt.fixture, res.Plugin)
			require.ErrorIs(t, res.Err, tt.err)
			var perr *host.PluginError
			require.ErrorAs(t, res.Err, &perr)
			assert.Equal(t, tt.fixture, perr.Plugin)
			assert.Equal(t, res.Err.Error(), res.Message)

			res = w.Process(context.Background(), testEvent([]byte(`{"x":"fine"}`)))
			require.NoError(t, res.Err)
			assert.Equal(t, abi.VerdictOK, res.Verdict)
			st := p.Stats()
			assert.Equal(t, uint64(1), st.Restarts[tt.cause], "%v", st.Restarts)
			assert.Equal(t, uint64(2), st.Instantiations)
		})
	}
}

func TestOutOfRangePointersTrapTheGuest(t *testing.T) {
	p := load(t, "oob", host.PluginSpec{})
	w := worker(t, p)
	for c := 1; c <= 18; c++ {
		res := w.Process(context.Background(), testEvent(fmt.Appendf(nil, `{"case":%d}`, c)))
		assert.Equal(t, abi.VerdictRetry, res.Verdict, "case %d: %s", c, res.Message)
		assert.ErrorIs(t, res.Err, host.ErrTrap, "case %d", c)
		assert.Contains(t, res.Message, "outside the guest's", "case %d", c)
	}
	assert.Equal(t, uint64(18), p.Stats().Restarts[host.CauseTrap])

	w = worker(t, load(t, "host-call", host.PluginSpec{}))
	for _, op := range []byte{'P', 'Q', 'G'} {
		res, _, _ := call(t, w, []byte(`{"a":1}`), op, "a", "", 64)
		assert.ErrorIs(t, res.Err, host.ErrTrap, string(op))
	}
}

func TestLimitsHold(t *testing.T) {
	w := worker(t, load(t, "oversized-output", host.PluginSpec{Sinks: []string{"audit"}}))
	res := w.Process(context.Background(), testEvent(event300))
	require.NoError(t, res.Err)
	assert.Equal(t, "emit_big=-3 set_event_big=-3 event_set_big=-3 set_event_array=-4 emit_small=0", res.Message)
	assert.Equal(t, string(event300), string(res.Event))
	require.Len(t, res.Emits, 1)
	assert.JSONEq(t, `{"ok":true}`, string(res.Emits[0].Event))

	w = worker(t, load(t, "too-many-emits", host.PluginSpec{Sinks: []string{"audit"}}))
	res = w.Process(context.Background(), testEvent(event300))
	require.NoError(t, res.Err)
	assert.Len(t, res.Emits, abi.DefaultMaxEmits)

	w = worker(t, load(t, "noop-c", host.PluginSpec{MaxEventBytes: 100}))
	res = w.Process(context.Background(), testEvent(event300))
	assert.Equal(t, abi.VerdictReject, res.Verdict)
	require.ErrorIs(t, res.Err, host.ErrEventTooLarge)
}

func TestInstancesAreReusedAndRecycled(t *testing.T) {
	p := load(t, "host-call", host.PluginSpec{MaxEventsPerInstance: 3})
	w := worker(t, p)
	var counts []int32
	for range 7 {
		_, n, _ := call(t, w, []byte(`{}`), 'c', "", "", 0)
		counts = append(counts, n)
	}
	assert.Equal(t, []int32{1, 2, 3, 1, 2, 3, 1}, counts)
	assert.Equal(t, uint64(2), p.Stats().Restarts[host.CauseMaxEvents])

	p = load(t, "membomb", host.PluginSpec{MaxMemoryGrowthBytes: 1 << 20, MemoryLimitBytes: 4 << 20})
	w = worker(t, p)
	res := w.Process(context.Background(), testEvent([]byte(`{"x":"boom"}`)))
	require.ErrorIs(t, res.Err, host.ErrTrap)
	// host-call grows its memory to hold a 2 MiB event: recycled afterwards.
	p = load(t, "host-call", host.PluginSpec{MaxMemoryGrowthBytes: 1 << 20, MaxEventBytes: 4 << 20})
	w = worker(t, p)
	bigEvent := []byte(`{"x":"` + strings.Repeat("b", 2<<20) + `"}`)
	_, n, _ := call(t, w, bigEvent, 'c', "", "", 0)
	assert.Equal(t, int32(1), n)
	_, n, _ = call(t, w, []byte(`{}`), 'c', "", "", 0)
	assert.Equal(t, int32(1), n, "a fresh instance after the memory grew")
	assert.Equal(t, uint64(1), p.Stats().Restarts[host.CauseMemoryGrowth])
}

func TestPipelineRunsPluginsInOrder(t *testing.T) {
	tag := load(t, "tag", host.PluginSpec{Config: []byte(`"v1"`), Sinks: []string{"audit"}})
	get := load(t, "host-call", host.PluginSpec{})
	w := worker(t, tag, get)

	// host-call reads the field tag set: the event flows from plugin to plugin.
	res := w.Process(context.Background(), host.Event{KeyID: "g", EventID: "tag", Deliveries: 64, Data: []byte(`{"a":1}`)})
	require.NoError(t, res.Err)
	assert.Equal(t, abi.VerdictOK, res.Verdict)
	assert.Equal(t, "\x04\x00\x00\x00\"v1\"", res.Message[:8])
	assert.JSONEq(t, `{"a":1,"tag":"v1"}`, string(res.Event))
	require.Len(t, res.Emits, 1)
	assert.Equal(t, host.Emit{Plugin: "tag", Sink: "audit", Event: []byte(`{"tagged":true}`)}, res.Emits[0])
	require.Len(t, res.Timings, 2)
	assert.Equal(t, "tag", res.Timings[0].Plugin)
	assert.Equal(t, "host-call", res.Timings[1].Plugin)

	// A drop stops the pipeline and discards the emits.
	res = w.Process(context.Background(), testEvent([]byte(`{"verdict":1}`)))
	assert.Equal(t, abi.VerdictDrop, res.Verdict)
	assert.Equal(t, "tag", res.Plugin)
	assert.Equal(t, "verdict from event", res.Message)
	assert.Empty(t, res.Emits)
	assert.Len(t, res.Timings, 1)
}

func TestGuestLogsGoToTheHostLog(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := host.Load(context.Background(), host.PluginSpec{Name: "caller", Path: wasmtest.Path(t, "host-call")}, host.Config{Logger: logger})
	require.NoError(t, err)
	defer p.Close(context.Background())
	w := worker(t, p)
	call(t, w, []byte(`{}`), 'l', "", "hello from the guest", uint32(abi.LogWarn))
	assert.Contains(t, buf.String(), `level=WARN msg=plugin_logged plugin=caller source=log line="hello from the guest"`)

	buf.Reset()
	p2, err := host.Load(context.Background(), host.PluginSpec{Name: "flood", Path: wasmtest.Path(t, "log-flood"), LogLinesPerSecond: 10}, host.Config{Logger: logger})
	require.NoError(t, err)
	defer p2.Close(context.Background())
	w = worker(t, p2)
	start := time.Now()
	res := w.Process(context.Background(), testEvent(event300))
	require.NoError(t, res.Err)
	assert.Less(t, time.Since(start), time.Second)
	lines := strings.Count(buf.String(), "msg=plugin_logged")
	assert.GreaterOrEqual(t, lines, 10) // the burst, plus a token per 100ms of the call
	assert.Less(t, lines, 20)
	assert.Less(t, buf.Len(), 11*(abi.DefaultMaxLogBytes+200))
}

func TestWorkersRunConcurrently(t *testing.T) {
	pipe := host.NewPipeline(load(t, "tag", host.PluginSpec{Config: []byte(`1`), Sinks: []string{"audit"}}), load(t, "noop-go", host.PluginSpec{}))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := pipe.NewWorker(context.Background())
			if !assert.NoError(t, err) {
				return
			}
			defer w.Release()
			for i := range 50 {
				data := fmt.Appendf(nil, `{"g":%d,"i":%d}`, g, i)
				res := w.Process(context.Background(), testEvent(data))
				assert.Equal(t, abi.VerdictOK, res.Verdict)
				assert.JSONEq(t, fmt.Sprintf(`{"g":%d,"i":%d,"tag":1}`, g, i), string(res.Event))
			}
		}()
	}
	wg.Wait()
}

func TestClosedPluginGivesRetry(t *testing.T) {
	p := load(t, "noop-c", host.PluginSpec{})
	w := worker(t, p)
	require.NoError(t, p.Close(context.Background()))
	res := w.Process(context.Background(), testEvent(event300))
	assert.Equal(t, abi.VerdictRetry, res.Verdict)
	require.ErrorIs(t, res.Err, host.ErrClosed)
	res = w.Process(context.Background(), testEvent(event300))
	require.ErrorIs(t, res.Err, host.ErrClosed)
}

func TestCallerDeadlineBoundsTheCall(t *testing.T) {
	p := load(t, "loop", host.PluginSpec{Deadline: 10 * time.Second})
	w := worker(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := w.Process(ctx, testEvent([]byte(`{"x":"boom"}`)))
	require.ErrorIs(t, res.Err, host.ErrDeadline)
	assert.Less(t, time.Since(start), 2*time.Second)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func TestGuestStderrGoesToTheHostLog(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	p, err := host.Load(context.Background(), host.PluginSpec{Name: "panicky", Path: wasmtest.Path(t, "panic-go")}, host.Config{Logger: logger})
	require.NoError(t, err)
	defer p.Close(context.Background())
	w := worker(t, p)
	res := w.Process(context.Background(), testEvent([]byte(`{"x":"boom"}`)))
	require.ErrorIs(t, res.Err, host.ErrTrap)
	assert.Contains(t, buf.String(), "plugin=panicky source=stderr line=\"panic:")
	assert.Contains(t, buf.String(), "msg=plugin_instance_discarded plugin=panicky")
}

// ticking reports whether p's deadline ticker goroutine is running: its
// stack frame names p as the receiver.
func ticking(p *host.Plugin) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Contains(string(buf), fmt.Sprintf("host.(*Plugin).watch(%p", p))
}

func TestCloseStopsTheTickerAndInstances(t *testing.T) {
	p, err := host.Load(context.Background(), host.PluginSpec{Name: "noop", Path: wasmtest.Path(t, "noop-c")}, host.Config{})
	require.NoError(t, err)
	assert.Eventually(t, func() bool { return ticking(p) }, time.Second, 10*time.Millisecond)
	w, err := host.NewPipeline(p).NewWorker(context.Background())
	require.NoError(t, err)
	assert.Equal(t, abi.VerdictOK, w.Process(context.Background(), testEvent(event300)).Verdict)
	assert.Equal(t, 1, p.Stats().Live)
	w.Release()
	require.NoError(t, p.Close(context.Background()))
	assert.Equal(t, 0, p.Stats().Live)
	assert.Eventually(t, func() bool { return !ticking(p) }, time.Second, 10*time.Millisecond)
}
