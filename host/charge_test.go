package host_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// hostileDeadline is the deadline the hostile modules run against.
const hostileDeadline = 100 * time.Millisecond

// TestHostCallsCharged runs modules that ask the host for unbounded work
// (plugins/fixtures/hostile) against a 100 ms deadline: each call must stop
// as a deadline failure. The host charges what it copies, scans and
// generates and checks the deadline itself; before it did, these calls ran
// 6 s to minutes. The bound asserted here is loose (30 deadlines: a shared
// CI machine stalls); the times measured are logged for the record.
func TestHostCallsCharged(t *testing.T) {
	for _, name := range []string{
		"fd-write-iovecs", "random-get", "poll-oneoff", "path-open",
		"set-event-large", "set-event-nested",
	} {
		t.Run(name, func(t *testing.T) {
			p := load(t, "hostile/"+name, host.PluginSpec{Name: name, Deadline: hostileDeadline, MemoryLimitBytes: 32 << 20})
			w := worker(t, p)
			for range 2 { // on the instance Load made, then on a fresh one
				start := time.Now()
				res := w.Process(context.Background(), testEvent([]byte(`{"x":"boom"}`)))
				took := time.Since(start)
				t.Logf("%s: stopped after %v against a %v deadline: %v", name, took.Round(time.Millisecond), hostileDeadline, res.Err)
				assert.Equal(t, abi.VerdictRetry, res.Verdict)
				require.ErrorIs(t, res.Err, host.ErrDeadline)
				assert.Less(t, took, 30*hostileDeadline)
			}
			res := w.Process(context.Background(), testEvent([]byte(`{"x":"fine"}`)))
			require.NoError(t, res.Err)
			assert.Equal(t, abi.VerdictOK, res.Verdict)
		})
	}
}

// The JSON a plugin hands the host follows the rules of the rest of
// auditproc: valid UTF-8, nested at most 10,000 levels.
func TestHostJSONRules(t *testing.T) {
	w := worker(t, load(t, "host-call", host.PluginSpec{Sinks: []string{"audit"}, MaxEmitBytes: 64 << 10}))
	nest := func(n int) string { return `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}` }
	tests := []struct {
		name      string
		op        byte
		path, val string
		want      int32
	}{
		{name: "set_event nested 10000", op: 'E', val: nest(10000)},
		{name: "set_event nested 10001", op: 'E', val: nest(10001), want: abi.ErrInvalid},
		{name: "set_event nested 500000", op: 'E', val: nest(500000), want: abi.ErrInvalid},
		{name: "set_event invalid UTF-8", op: 'E', val: "{\"a\":\"\xff\"}", want: abi.ErrInvalid},
		{name: "set_event UTF-8 surrogate", op: 'E', val: "{\"a\":\"\xed\xa0\x80\"}", want: abi.ErrInvalid},
		{name: "set_event UTF-8", op: 'E', val: `{"a":"é€😀"}`},
		{name: "set_event control character", op: 'E', val: "{\"a\":\"\x01\"}", want: abi.ErrInvalid},
		{name: "event_set invalid UTF-8", op: 's', path: "a", val: "\"\xc3\"", want: abi.ErrInvalid},
		{name: "event_set nested past the limit with its path", op: 's', path: "a.b", val: strings.Repeat("[", 9999) + strings.Repeat("]", 9999), want: abi.ErrInvalid},
		{name: "event_set nested within the limit", op: 's', path: "a", val: strings.Repeat("[", 9998) + strings.Repeat("]", 9998)},
		{name: "emit invalid UTF-8", op: 'e', path: "audit", val: "{\"\xfe\":1}", want: abi.ErrInvalid},
		{name: "emit nested 20000", op: 'e', path: "audit", val: nest(20000), want: abi.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, r, _ := call(t, w, []byte(`{}`), tt.op, tt.path, tt.val, 1)
			require.NoError(t, res.Err)
			assert.Equal(t, tt.want, r)
		})
	}
}

// set_message keeps at most 1 KiB and never cuts a UTF-8 character.
func TestSetMessageTruncation(t *testing.T) {
	w := worker(t, load(t, "host-call", host.PluginSpec{}))
	message := func(msg string) string {
		t.Helper()
		res := w.Process(context.Background(), host.Event{KeyID: "m", Stream: msg, Deliveries: uint32(abi.VerdictReject), Data: []byte(`{}`)})
		require.NoError(t, res.Err)
		require.Equal(t, abi.VerdictReject, res.Verdict)
		return res.Message
	}
	for _, tail := range []string{"é", "€", "😀"} {
		for pad := abi.DefaultMaxMessageBytes - len(tail) + 1; pad < abi.DefaultMaxMessageBytes; pad++ {
			got := message(strings.Repeat("a", pad) + tail + "bbbb")
			assert.True(t, utf8.ValidString(got), "pad %d tail %q: %q", pad, tail, got[pad:])
			assert.Equal(t, strings.Repeat("a", pad), got, "the character that does not fit is left out whole")
		}
		got := message(strings.Repeat("a", abi.DefaultMaxMessageBytes-len(tail)) + tail + "bbbb")
		assert.Equal(t, strings.Repeat("a", abi.DefaultMaxMessageBytes-len(tail))+tail, got)
	}
	assert.Equal(t, strings.Repeat("é", 512), message(strings.Repeat("é", 600)))
}

// A module that cannot process an event, because it exits or closes itself
// while it loads, is refused at load with the export that did it named.
func TestInitializeExitRefused(t *testing.T) {
	tests := []struct {
		fixture string
		spec    host.PluginSpec
		err     error
		says    string
	}{
		{fixture: "hostile/initialize-exit", err: host.ErrExit, says: "_initialize: host: plugin exited with code 0"},
		{fixture: "hostile/start-exit", err: host.ErrExit, says: "the start function: host: plugin exited with code 0"},
		{fixture: "proc-exit-init", err: host.ErrExit, says: "auditproc_init: host: plugin exited with code 0"},
		{fixture: "hostile/alloc-loop", spec: host.PluginSpec{InitDeadline: hostileDeadline}, err: host.ErrDeadline, says: "auditproc_alloc: host: plugin call exceeded its deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			spec := tt.spec
			spec.Name = "x"
			spec.Path = wasmtest.Path(t, tt.fixture)
			p, err := host.Load(context.Background(), spec, host.Config{})
			require.Error(t, err)
			assert.Nil(t, p)
			require.ErrorIs(t, err, tt.err)
			assert.Contains(t, err.Error(), tt.says)
			assert.Equal(t, 1, strings.Count(err.Error(), `"x"`), "the plugin is named once: %v", err)
			assert.NotContains(t, err.Error(), abi.ExportInit+": "+abi.ExportAlloc)
		})
	}
}

// A trap's stack trace names the function by its index in the module as
// written, as it would without the meter (whose import shifts every
// defined function's index by one), and the plugin's name once.
func TestTrapNamesTheModulesOwnFunction(t *testing.T) {
	var msgs []string
	for _, trusted := range []bool{false, true} {
		p := load(t, "trap-process", host.PluginSpec{Trusted: trusted})
		res := worker(t, p).Process(context.Background(), testEvent([]byte(`{"x":"boom"}`)))
		require.ErrorIs(t, res.Err, host.ErrTrap)
		assert.Contains(t, res.Message, ".$4(i32,i32) i32", "auditproc_process is function 4 of trap-process.wat")
		assert.Equal(t, 1, strings.Count(res.Message, "trap-process"), res.Message)
		msgs = append(msgs, res.Message)
	}
	assert.Equal(t, msgs[0], msgs[1], "metered and trusted report the same trap")
}
