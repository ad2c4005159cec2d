package hosttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
)

// Option adjusts a Conformance run.
type Option func(*options)

type options struct {
	hostConfig host.Config
	events     []string
	stateful   bool
	workers    int
}

// WithEvents adds events (JSON object texts) to the batch of realistic
// events, typically the events the plugin is written for, so that its
// interesting paths (rejections, emits, rewrites) are covered too.
func WithEvents(events ...string) Option {
	return func(o *options) { o.events = append(o.events, events...) }
}

// Stateful declares that the plugin keeps state across events by design
// (counters, windows, rate limits): the no-leakage check then only asserts
// that a previous event's unique values never show up in a later event's
// result, instead of comparing the later result with a fresh instance's, and
// the concurrent-workers check is skipped.
func Stateful() Option {
	return func(o *options) { o.stateful = true }
}

// WithHostConfig loads the plugin with cfg (for example with a Logger that
// shows its log lines) instead of the zero host.Config.
func WithHostConfig(cfg host.Config) Option {
	return func(o *options) { o.hostConfig = cfg }
}

// WithWorkers sets how many workers process the batch concurrently in the
// concurrent-workers check. Default 4.
func WithWorkers(n int) Option {
	return func(o *options) { o.workers = n }
}

// Conformance runs the plugin described by spec through a real host
// pipeline, one subtest per check:
//
//   - empty: the event {} gets a valid verdict without a trap.
//   - oversized: an event one byte over the event size limit is refused by
//     the host before the guest (reject, host.ErrEventTooLarge), or answered.
//   - at-limit: an event of exactly the limit is answered without a trap.
//   - malformed: texts that are no JSON object (empty, garbage, arrays,
//     scalars, truncated or invalid UTF-8) are answered without a trap.
//   - nesting: deeply nested objects and arrays, and a very wide object.
//   - unicode: multi-byte text, every JSON escape, keys holding dots and
//     backslashes.
//   - batch: realistic audit events (see Events) plus WithEvents.
//   - no-leakage: each batch event, processed right after another event on
//     the same worker, gets the same result as on a fresh instance, and never
//     contains the previous event's values.
//   - memory: 32 large events in a row on one worker do not grow the
//     instance's memory past the cap or the recycling threshold.
//   - workers: several workers processing the batch concurrently agree.
//   - instances: no instance was discarded or recycled during the run.
//
// For every answer it checks that the verdict is one of the four, that the
// host did not impose it (trap, deadline, proc_exit, invalid verdict), that
// the call finished within spec.Deadline, that an ok result's event is a JSON
// object, and that emits go only to sinks in spec.Sinks.
//
// spec is used as in production, with the host's defaults for zero fields.
func Conformance(t *testing.T, spec host.PluginSpec, opts ...Option) {
	t.Helper()
	s := newSuite(t, spec, opts...)
	t.Run("empty", func(t *testing.T) { s.checkEmpty(t) })
	t.Run("oversized", func(t *testing.T) { s.checkOversized(t) })
	t.Run("at-limit", func(t *testing.T) { s.checkAtLimit(t) })
	t.Run("malformed", func(t *testing.T) { s.checkMalformed(t) })
	t.Run("nesting", func(t *testing.T) { s.checkNesting(t) })
	t.Run("unicode", func(t *testing.T) { s.checkUnicode(t) })
	t.Run("batch", func(t *testing.T) { s.checkBatch(t) })
	t.Run("no-leakage", func(t *testing.T) { s.checkNoLeakage(t) })
	t.Run("memory", func(t *testing.T) { s.checkMemory(t) })
	if !s.opts.stateful {
		t.Run("workers", func(t *testing.T) { s.checkWorkers(t) })
	}
	t.Run("instances", func(t *testing.T) { s.checkInstances(t) })
}

// suite is one plugin under test.
type suite struct {
	spec   host.PluginSpec // as given, with the defaults the checks need
	opts   options
	pipe   *host.Pipeline // the plugin under test
	fresh  *host.Pipeline // a second load, for fresh instances
	plugin *host.Plugin
}

func newSuite(tb testing.TB, spec host.PluginSpec, opts ...Option) *suite {
	tb.Helper()
	o := options{workers: 4}
	for _, opt := range opts {
		opt(&o)
	}
	s := &suite{spec: spec, opts: o}
	cfg := o.hostConfig
	if cfg.CacheDir == "" {
		// The plugin is loaded twice; compile it once (a standard Go module
		// takes seconds).
		cfg.CacheDir = tb.TempDir()
	}
	s.plugin = Load(tb, spec, cfg)
	s.pipe = host.NewPipeline(s.plugin)
	s.fresh = host.NewPipeline(Load(tb, spec, cfg))
	if s.spec.Deadline == 0 {
		s.spec.Deadline = host.DefaultDeadline
	}
	if s.spec.MaxEventBytes == 0 {
		s.spec.MaxEventBytes = host.DefaultMaxEventBytes
	}
	return s
}

// Load loads spec with cfg and closes the plugin when the test ends; it
// fails the test when the plugin does not load.
func Load(tb testing.TB, spec host.PluginSpec, cfg host.Config) *host.Plugin {
	tb.Helper()
	p, err := host.Load(context.Background(), spec, cfg)
	require.NoError(tb, err, "load plugin %q", spec.Name)
	tb.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// NewWorker makes a worker of pipe and releases it when the test ends.
func NewWorker(tb testing.TB, pipe *host.Pipeline) *host.Worker {
	tb.Helper()
	w, err := pipe.NewWorker(context.Background())
	require.NoError(tb, err, "new worker")
	tb.Cleanup(w.Release)
	return w
}

// Event returns a host.Event for data with plausible stream metadata; id
// becomes the event id and, with a prefix, the entry id's sequence.
func Event(id, data string) host.Event {
	return host.Event{
		EntryID:    "1700000000000-" + id,
		Stream:     "audit:stream",
		KeyID:      "hosttest-key",
		EventID:    id,
		Deliveries: 1,
		Data:       []byte(data),
	}
}

// answer is a result copied out of the worker (whose buffers are reused).
type answer struct {
	Verdict  abi.Verdict
	Plugin   string
	Message  string
	Err      error
	Event    string
	Emits    []host.Emit
	Duration time.Duration
}

func process(w *host.Worker, ev host.Event) answer {
	res := w.Process(context.Background(), ev)
	a := answer{Verdict: res.Verdict, Plugin: res.Plugin, Message: res.Message, Err: res.Err, Event: string(res.Event)}
	for _, e := range res.Emits {
		a.Emits = append(a.Emits, host.Emit{Plugin: e.Plugin, Sink: e.Sink, Event: bytes.Clone(e.Event)})
	}
	for _, tm := range res.Timings {
		a.Duration += tm.Duration
	}
	return a
}

// same reports whether two answers are the same but for their durations.
func (a answer) same(b answer) bool {
	if a.Verdict != b.Verdict || a.Plugin != b.Plugin || a.Message != b.Message || a.Event != b.Event || len(a.Emits) != len(b.Emits) {
		return false
	}
	for i := range a.Emits {
		if a.Emits[i].Sink != b.Emits[i].Sink || !bytes.Equal(a.Emits[i].Event, b.Emits[i].Event) {
			return false
		}
	}
	return true
}

func (a answer) String() string {
	emits := make([]string, len(a.Emits))
	for i, e := range a.Emits {
		emits[i] = e.Sink + ":" + clip(string(e.Event))
	}
	return fmt.Sprintf("verdict=%s message=%q event=%s emits=%v", a.Verdict, a.Message, clip(a.Event), emits)
}

// clip shortens s for a failure message.
func clip(s string) string {
	const n = 200
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
}

// checkAnswer asserts what every answer must satisfy. allowed lists host
// errors that are acceptable for this input.
func (s *suite) checkAnswer(tb testing.TB, what string, in []byte, a answer, allowed ...error) {
	tb.Helper()
	assert.True(tb, a.Verdict.Valid(), "%s: verdict %s is not one of ok, drop, retry, reject", what, a.Verdict)
	if a.Err != nil {
		ok := false
		for _, e := range allowed {
			ok = ok || errors.Is(a.Err, e)
		}
		assert.True(tb, ok, "%s: the host imposed the verdict %s: %v", what, a.Verdict, a.Err)
		if !ok {
			return
		}
	}
	// The host stops a call at the deadline plus one tick (at most 25ms);
	// anything slower than that was not stopped, which is a host bug.
	assert.LessOrEqual(tb, a.Duration, s.spec.Deadline+50*time.Millisecond, "%s: answered after the deadline", what)
	if a.Err == nil && a.Verdict == abi.VerdictOK && isObject(in) {
		assert.True(tb, isObject([]byte(a.Event)), "%s: ok with an event that is no JSON object: %s", what, clip(a.Event))
	}
	for _, e := range a.Emits {
		assert.Contains(tb, s.spec.Sinks, e.Sink, "%s: emit to a sink not granted", what)
		assert.True(tb, isObject(e.Event), "%s: emit to %s is no JSON object: %s", what, e.Sink, clip(string(e.Event)))
	}
}

func isObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

func (s *suite) run(tb testing.TB, what string, data string, allowed ...error) answer {
	tb.Helper()
	w := NewWorker(tb, s.pipe)
	a := process(w, Event(what, data))
	s.checkAnswer(tb, what, []byte(data), a, allowed...)
	return a
}

func (s *suite) checkEmpty(tb testing.TB) {
	s.run(tb, "empty", "{}")
}

// padded returns {"event_id":"pad","pad":"xxx…"} of exactly n bytes.
func padded(n int) string {
	const head, tail = `{"event_id":"pad","pad":"`, `"}`
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

func (s *suite) checkOversized(tb testing.TB) {
	a := s.run(tb, "oversized", padded(s.spec.MaxEventBytes+1), host.ErrEventTooLarge)
	if a.Err != nil {
		assert.Equal(tb, abi.VerdictReject, a.Verdict, "an event over the size limit is rejected, not retried")
	}
}

func (s *suite) checkAtLimit(tb testing.TB) {
	s.run(tb, "at-limit", padded(s.spec.MaxEventBytes))
}

// Malformed are event texts that are no JSON object. Production never hands
// them to a plugin (events are verified JSON objects), but a plugin must not
// trap on them either.
var Malformed = map[string]string{
	"no bytes":         "",
	"whitespace":       " \t\r\n",
	"garbage":          "not json at all",
	"binary":           "\x00\x01\x02\xff\xfe",
	"array":            `[1,2,3]`,
	"string":           `"a string"`,
	"null":             `null`,
	"number":           `42`,
	"truncated":        `{"user":"alice","action":`,
	"unterminated":     `{"user":"al`,
	"extra brace":      `{"a":1}}`,
	"trailing comma":   `{"a":1,}`,
	"two objects":      `{"a":1}{"b":2}`,
	"invalid utf-8":    "{\"user\":\"\xff\xfe\xfd\"}",
	"lone surrogate":   `{"user":"\ud800"}`,
	"bad escape":       `{"user":"\q"}`,
	"duplicate keys":   `{"user":"alice","user":"bob"}`,
	"unquoted key":     `{user:"alice"}`,
	"single quotes":    `{'user':'alice'}`,
	"nan":              `{"n":NaN}`,
	"huge number":      `{"n":1e999999}`,
	"leading garbage":  `xx{"a":1}`,
	"object in string": `"{\"a\":1}"`,
}

func (s *suite) checkMalformed(tb testing.TB) {
	w := NewWorker(tb, s.pipe)
	for _, name := range sortedKeys(Malformed) {
		data := Malformed[name]
		a := process(w, Event("malformed", data))
		s.checkAnswer(tb, "malformed: "+name, []byte(data), a)
	}
}

// Nested returns events with deep nesting and one very wide object.
func Nested() map[string]string {
	const depth = 1000
	obj := strings.Repeat(`{"a":`, depth) + `1` + strings.Repeat(`}`, depth)
	arr := `{"event_id":"deep-array","deep":` + strings.Repeat(`[`, depth) + `1` + strings.Repeat(`]`, depth) + `}`
	var wide strings.Builder
	wide.WriteString(`{"event_id":"wide"`)
	for i := range 10000 {
		fmt.Fprintf(&wide, `,"k%d":%d`, i, i)
	}
	wide.WriteString(`}`)
	mixed := `{"event_id":"mixed","user":` + strings.Repeat(`{"x":[`, 200) + `"alice"` + strings.Repeat(`]}`, 200) + `}`
	return map[string]string{
		"deep object": obj,
		"deep array":  arr,
		"wide object": wide.String(),
		"mixed":       mixed,
	}
}

func (s *suite) checkNesting(tb testing.TB) {
	w := NewWorker(tb, s.pipe)
	nested := Nested()
	for _, name := range sortedKeys(nested) {
		a := process(w, Event("nested", nested[name]))
		s.checkAnswer(tb, "nesting: "+name, []byte(nested[name]), a)
	}
}

// Unicode are events with multi-byte text, every JSON escape, and keys that
// look like paths.
var Unicode = map[string]string{
	"multi-byte": `{"event_id":"u1","user":"Zoë Ångström","city":"東京","note":"Привет, мир","emoji":"🙂🎉👩‍💻"}`,
	"escapes":    `{"event_id":"u2","msg":"quote \" backslash \\ slash \/ \b\f\n\r\t nul \u0000 e-acute \u00e9 smile \ud83d\ude00"}`,
	"path keys":  `{"event_id":"u3","a.b":"dotted key","a\\b":"backslash key","a":{"b":"nested"},"0":"digit key","":"empty key"}`,
	"raw utf-8":  "{\"event_id\":\"u4\",\"user\":\"caf\u00e9\",\"bidi\":\"\u202eevil\u202c\",\"bom\":\"\ufeff\"}",
	"long text":  `{"event_id":"u5","text":"` + strings.Repeat("Grüße 🌍 ", 5000) + `"}`,
}

func (s *suite) checkUnicode(tb testing.TB) {
	w := NewWorker(tb, s.pipe)
	for _, name := range sortedKeys(Unicode) {
		a := process(w, Event("unicode", Unicode[name]))
		s.checkAnswer(tb, "unicode: "+name, []byte(Unicode[name]), a)
	}
}

// batch is the realistic events plus WithEvents.
func (s *suite) batch() []string {
	return append(Events(), s.opts.events...)
}

func (s *suite) checkBatch(tb testing.TB) {
	w := NewWorker(tb, s.pipe)
	for i, ev := range s.batch() {
		a := process(w, Event(fmt.Sprint(i), ev))
		s.checkAnswer(tb, fmt.Sprintf("batch event %d", i), []byte(ev), a)
	}
}

// canary returns an event full of values no other event has.
func canary(i int) (event, marker string) {
	marker = fmt.Sprintf("hosttest-canary-%d-7f3a", i)
	return fmt.Sprintf(`{"event_id":"%[1]s","timestamp":"2024-05-01T11:59:%02[2]dZ","actor":"%[1]s","action":"user.login","target":"%[1]s","outcome":"failure","severity":"critical","source_ip":"203.0.113.%[3]d","details":{"email":"%[1]s@example.com","note":"%[1]s"}}`, marker, i%60, i%250), marker
}

func (s *suite) checkNoLeakage(tb testing.TB) {
	w := NewWorker(tb, s.pipe)
	for i, b := range s.batch() {
		prev, marker := canary(i)
		process(w, Event("canary", prev))
		after := process(w, Event(fmt.Sprint(i), b))
		s.checkAnswer(tb, fmt.Sprintf("batch event %d after another event", i), []byte(b), after)
		for _, text := range append([]string{after.Event, after.Message}, emitTexts(after.Emits)...) {
			assert.NotContains(tb, text, marker, "batch event %d: the result carries a value of the event before it", i)
		}
		if s.opts.stateful {
			continue
		}
		// A worker whose only instance has run nothing but auditproc_init.
		fresh := NewWorker(tb, s.fresh)
		alone := process(fresh, Event(fmt.Sprint(i), b))
		fresh.Release()
		assert.True(tb, after.same(alone), "batch event %d: the result depends on the event before it (declare hosttest.Stateful() if that is by design)\n after another: %s\n fresh:         %s", i, after, alone)
	}
}

func emitTexts(emits []host.Emit) []string {
	out := make([]string, len(emits))
	for i, e := range emits {
		out[i] = string(e.Event)
	}
	return out
}

func (s *suite) checkMemory(tb testing.TB) {
	before := s.plugin.Stats()
	w := NewWorker(tb, s.pipe)
	big := padded(min(s.spec.MaxEventBytes/2, 512<<10))
	for i := range 32 {
		a := process(w, Event(fmt.Sprintf("mem-%d", i), big))
		s.checkAnswer(tb, fmt.Sprintf("large event %d", i), []byte(big), a)
	}
	after := s.plugin.Stats()
	for _, c := range []host.Cause{host.CauseMemoryGrowth, host.CauseTrap} {
		assert.Equal(tb, before.Restarts[c], after.Restarts[c], "instances restarted for %s while processing large events: memory grows per event", c)
	}
}

func (s *suite) checkWorkers(tb testing.TB) {
	events := s.batch()
	results := make([][]answer, s.opts.workers)
	var wg sync.WaitGroup
	for k := range s.opts.workers {
		w := NewWorker(tb, s.pipe)
		wg.Go(func() {
			for i, ev := range events {
				results[k] = append(results[k], process(w, Event(fmt.Sprint(i), ev)))
			}
		})
	}
	wg.Wait()
	for k := range results {
		for i, a := range results[k] {
			s.checkAnswer(tb, fmt.Sprintf("worker %d, batch event %d", k, i), []byte(events[i]), a)
			if k > 0 {
				assert.True(tb, a.same(results[0][i]), "worker %d and worker 0 disagree on batch event %d\n %s\n %s", k, i, a, results[0][i])
			}
		}
	}
}

func (s *suite) checkInstances(tb testing.TB) {
	st := s.plugin.Stats()
	for c, n := range st.Restarts {
		if c == host.CauseMaxEvents {
			continue
		}
		assert.Zero(tb, n, "%d instance(s) of the plugin were discarded or recycled for %s during the suite", n, c)
	}
}
