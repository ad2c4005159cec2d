package processor_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// chainFixture is a stream of chained (envelope version 2) entries on a
// Redis of the test's own, processed by replicas that run the e2e-go
// fixture plugin, which emits what it saw (event id, entry id, deliveries)
// to a file sink of each replica's own. A file sink is written before the
// commit, so its lines are every successful plugin run, committed or not.
type chainFixture struct {
	rdb                 *redis.Client
	keys                *integrity.Keyring
	stream, dead, group string
	dir                 string
}

func newChainFixture(t *testing.T) *chainFixture {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("k", map[string][]byte{"k": key})
	require.NoError(t, err)
	return &chainFixture{rdb: rdb, keys: keys, stream: "{rp}:stream", dead: "{rp}:dead", group: "g", dir: t.TempDir()}
}

// producer is a chained source named name.
func (f *chainFixture) producer(t *testing.T, name string) *streambus.Bus {
	t.Helper()
	b, err := streambus.New(streambus.Config{Source: name}, nil, f.rdb, f.keys)
	require.NoError(t, err)
	return b
}

// seal signs n events as the source's next entries, without writing them.
func (f *chainFixture) seal(t *testing.T, src *streambus.Bus, n int) []integrity.Envelope {
	t.Helper()
	envs := make([]integrity.Envelope, n)
	for i := range envs {
		var err error
		envs[i], err = src.Seal(f.stream, fmt.Appendf(nil, `{"actor":"u-%d","action":"login"}`, i+1))
		require.NoError(t, err)
	}
	return envs
}

// write appends env's fields as the producer writes them, or in reverse
// order of fields (the same event re-added with its fields reordered).
func (f *chainFixture) write(t *testing.T, env integrity.Envelope, reordered bool) string {
	t.Helper()
	vals := env.Values()
	if reordered {
		var rev []any
		for i := len(vals) - 2; i >= 0; i -= 2 {
			rev = append(rev, vals[i], vals[i+1])
		}
		vals = rev
	}
	id, err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: f.stream, Values: vals}).Result()
	require.NoError(t, err)
	return id
}

// replica is one processor with its plugin, metrics and log.
type replica struct {
	p       *processor.Processor
	metrics *processor.Metrics
	seen    string // its file sink
}

func (f *chainFixture) replica(t *testing.T, name string, pluginConf string, cfg processor.Config, logger *slog.Logger) *replica {
	t.Helper()
	pl, err := host.Load(context.Background(), host.PluginSpec{
		Name: "recorder", Path: wasmtest.Path(t, "e2e-go"), Config: []byte(pluginConf), Sinks: []string{"seen"},
	}, host.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pl.Close(context.Background()) })
	bus, err := streambus.New(streambus.Config{}, nil, f.rdb, f.keys)
	require.NoError(t, err)
	seen := filepath.Join(f.dir, name+".jsonl")
	cfg.Stream, cfg.Group, cfg.Consumer, cfg.DeadLetter = f.stream, f.group, name, f.dead
	cfg.Sinks = map[string]processor.Sink{"seen": {Type: processor.SinkFile, Path: seen}}
	m := processor.NewMetrics()
	p, err := processor.New(cfg, logger, bus, host.NewPipeline(pl), m)
	require.NoError(t, err)
	return &replica{p: p, metrics: m, seen: seen}
}

// drain runs replicas (StopWhenIdle) side by side until the stream is
// drained.
func drain(t *testing.T, replicas ...*replica) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	for i, r := range replicas {
		wg.Go(func() { errs[i] = r.p.Run(t.Context()) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// sawLine is one line of the recorder's file sink.
type sawLine struct {
	EventID    string `json:"event_id"`
	EntryID    string `json:"entry_id"`
	Deliveries int    `json:"deliveries"`
}

// saw reads what the plugin of every replica saw, from files that may not
// exist (a replica that ran nothing).
func (f *chainFixture) saw(t *testing.T) []sawLine {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(f.dir, "*.jsonl"))
	require.NoError(t, err)
	var out []sawLine
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l sawLine
			require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
			out = append(out, l)
		}
	}
	return out
}

// deadLetters returns the dead-letter entries' original ids and reasons.
func (f *chainFixture) deadLetters(t *testing.T) map[string]string {
	t.Helper()
	msgs, err := f.rdb.XRange(context.Background(), f.dead, "-", "+").Result()
	require.NoError(t, err)
	out := map[string]string{}
	for _, m := range msgs {
		out[fmt.Sprint(m.Values[streambus.DeadLetterOriginalID])] = fmt.Sprint(m.Values[streambus.DeadLetterReason])
	}
	return out
}

func (f *chainFixture) pending(t *testing.T) int64 {
	t.Helper()
	info, err := f.rdb.XPending(context.Background(), f.stream, f.group).Result()
	require.NoError(t, err)
	return info.Count
}

// TestReplayNeverReachesPlugin: copies of chained entries, byte for byte
// and with their fields reordered, never reach a plugin once the original
// was processed; each copy is dead-lettered with reason replayed. An entry
// and its copies read at the same moment by two replicas reach the plugin
// once: whichever is looked up first (usually the first in the stream, but
// another replica's later batch may be looked up before it) is processed,
// the others are dead-lettered as replayed.
func TestReplayNeverReachesPlugin(t *testing.T) {
	f := newChainFixture(t)
	src := f.producer(t, "replay-producer")
	envs := f.seal(t, src, 4)
	cfg := processor.Config{StopWhenIdle: true, BatchSize: 2, Workers: 2}
	replicas := func() []*replica {
		return []*replica{
			f.replica(t, "a", `{"sink":"seen"}`, cfg, nil),
			f.replica(t, "b", `{"sink":"seen"}`, cfg, nil),
		}
	}

	// Three entries, processed by two replicas.
	for _, env := range envs[:3] {
		f.write(t, env, false)
	}
	first := replicas()
	drain(t, first...)
	require.Len(t, f.saw(t), 3)

	// Copies of processed entries: entry 2 byte for byte, entry 3 with
	// its fields reordered. Entry 4 is new, and copied both ways right
	// behind it, before any replica read it.
	copies := map[string]bool{}
	copies[f.write(t, envs[1], false)] = true
	copies[f.write(t, envs[2], true)] = true
	fourth := map[string]bool{f.write(t, envs[3], false): true}
	fourth[f.write(t, envs[3], false)] = true
	fourth[f.write(t, envs[3], true)] = true
	second := replicas()
	drain(t, second...)

	times := map[string]int{}
	for _, l := range f.saw(t) {
		times[l.EventID]++
		assert.False(t, copies[l.EntryID], "the plugin saw copy %s", l.EntryID)
		if l.EventID == envs[3].EventID {
			require.True(t, fourth[l.EntryID], "entry 4 processed as one of its three entries, not %s", l.EntryID)
			delete(fourth, l.EntryID) // the one processed; the other two are copies
		}
	}
	for id := range fourth {
		copies[id] = true
	}
	for i, env := range envs {
		assert.Equal(t, 1, times[env.EventID], "the plugin saw event %d once", i+1)
	}

	dead := f.deadLetters(t)
	assert.Len(t, dead, len(copies))
	for id := range copies {
		assert.True(t, strings.HasPrefix(dead[id], "replayed: "), "copy %s dead-lettered as replayed, got %q", id, dead[id])
	}
	var refused float64
	for _, r := range append(first, second...) {
		refused += testutil.ToFloat64(r.metrics.Tampered.WithLabelValues("replayed"))
	}
	assert.InDelta(t, float64(len(copies)), refused, 0, "auditproc_entries_tampered_total{reason=\"replayed\"}")
	assert.Zero(t, f.pending(t))
}

// TestRedeliveryIsNotReplay: an entry delivered and not acknowledged is
// processed normally when it comes back under the same entry id: after its
// plugin failed once, and after the consumer that read it (and recorded
// its sequence number) died.
func TestRedeliveryIsNotReplay(t *testing.T) {
	f := newChainFixture(t)
	ctx := context.Background()
	src := f.producer(t, "redelivery-producer")
	envs := f.seal(t, src, 3)
	// A consumer reads the first entry, records its mark as a processor
	// does before running plugins, and dies.
	f.write(t, envs[0], false)
	_, err := f.rdb.XGroupCreateMkStream(ctx, f.stream, f.group, "0").Result()
	require.NoError(t, err)
	bus, err := streambus.New(streambus.Config{}, nil, f.rdb, f.keys)
	require.NoError(t, err)
	got, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "dead", Count: 1, Block: -1})
	require.NoError(t, err)
	require.Len(t, got.Entries, 1)
	verdicts, err := bus.Seen(ctx, f.stream, f.group, []streambus.Mark{got.Entries[0].Mark()})
	require.NoError(t, err)
	require.Equal(t, []streambus.SeenVerdict{streambus.SeenFresh}, verdicts)
	f.write(t, envs[1], false)
	f.write(t, envs[2], false)

	// The replica fails every entry's first delivery (retry), so the new
	// entries run again after a claim; the dead consumer's entry is claimed
	// (its second delivery) and runs.
	cfg := processor.Config{StopWhenIdle: true, MinIdle: 50 * time.Millisecond, ReclaimInterval: 20 * time.Millisecond}
	r := f.replica(t, "a", `{"sink":"seen","fail_first":1}`, cfg, nil)
	drain(t, r)

	saw := f.saw(t)
	require.Len(t, saw, 3)
	for _, l := range saw {
		assert.GreaterOrEqual(t, l.Deliveries, 2, "entry %s processed on a redelivery", l.EntryID)
	}
	assert.Empty(t, f.deadLetters(t))
	assert.Zero(t, testutil.ToFloat64(r.metrics.Tampered.WithLabelValues("replayed")))
	assert.Zero(t, f.pending(t))
}

// logBuffer collects a logger's JSON lines from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the logged lines whose msg is msg, decoded.
func (l *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// lowMark is the low mark of source on the stream (seen.go), 0 when none.
func (f *chainFixture) lowMark(t *testing.T, source string) int64 {
	t.Helper()
	n, err := f.rdb.HGet(context.Background(), streambus.SeqLowKey(f.stream, f.group), source).Int64()
	if err == redis.Nil {
		return 0
	}
	require.NoError(t, err)
	return n
}

// addDeleted appends env and deletes it in one atomic step: an entry gone
// before any reader could see it.
var addDeleted = redis.NewScript(`
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV))
redis.call('XDEL', KEYS[1], id)
return id
`)

// TestSequenceGapAlarm: a source's sequence number that never arrives is
// reported once its grace period ended (audit_sequence_gap, with the
// missing range, and auditproc_sequence_gaps_total); one that arrives out
// of order within the grace period raises nothing.
func TestSequenceGapAlarm(t *testing.T) {
	f := newChainFixture(t)
	ctx := context.Background()
	var logs logBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	const grace = 2 * time.Second
	r := f.replica(t, "a", `{"sink":"seen"}`, processor.Config{GapGrace: grace, Block: 50 * time.Millisecond}, logger)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.p.Run(runCtx) }()
	stopped := false
	stopRun := func() {
		if !stopped {
			stopped = true
			stop()
			require.NoError(t, <-done)
		}
	}
	defer stopRun()

	// Source "early" writes seq 1, 2 and 4; seq 3 arrives once 4 was
	// processed (its hole seen), well within the grace period.
	early := f.producer(t, "early")
	envs := f.seal(t, early, 4)
	for _, i := range []int{0, 1, 3} {
		f.write(t, envs[i], false)
	}
	require.Eventually(t, func() bool {
		n, err := f.rdb.ZCard(ctx, streambus.SeenKey(f.stream, f.group, early.Source())).Result()
		return err == nil && n == 1 && f.lowMark(t, early.Source()) == 2 && f.pending(t) == 0
	}, time.Minute, 5*time.Millisecond, "seq 1, 2 and 4 processed, 3 missing")
	f.write(t, envs[2], false)
	require.Eventually(t, func() bool { return f.lowMark(t, early.Source()) == 4 }, time.Minute, 5*time.Millisecond)
	// Had the hole stayed open, it would be reported within this wait.
	time.Sleep(grace + grace/2)

	// Source "gappy" writes seq 1 to 6; entry 4 is deleted (XDEL) before
	// any reader sees it.
	gappy := f.producer(t, "gappy")
	envs = f.seal(t, gappy, 6)
	var deleted string
	for i, env := range envs {
		if i == 3 {
			var err error
			deleted, err = addDeleted.Run(ctx, f.rdb, []string{f.stream}, env.Values()...).Text()
			require.NoError(t, err)
			continue
		}
		f.write(t, env, false)
	}
	require.NotEmpty(t, deleted)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(r.metrics.SequenceGaps) >= 1
	}, time.Minute, 10*time.Millisecond, "the gap is reported")
	stopRun()

	assert.InDelta(t, 1, testutil.ToFloat64(r.metrics.SequenceGaps), 0, "auditproc_sequence_gaps_total")
	gaps := logs.lines(t, "audit_sequence_gap")
	require.Len(t, gaps, 1)
	g := gaps[0]
	assert.Equal(t, gappy.Source(), g["source"])
	assert.Equal(t, f.stream, g["stream"])
	assert.EqualValues(t, 4, g["missing_from"])
	assert.EqualValues(t, 4, g["missing_to"])
	assert.EqualValues(t, 6, f.lowMark(t, gappy.Source()), "the missing entry is given up")
	assert.Len(t, f.saw(t), 4+5, "every entry that arrived was processed")
}
