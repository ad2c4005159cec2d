package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/trail"
)

// report is the outcome of the invariant check of one scenario.
type report struct {
	Scenario string

	Produced       int // distinct events the producer sent (each until acknowledged, or until it stopped)
	Written        int // event ids the producer was told were written
	Poison         int // of which marked poison
	StreamEntries  int // entries in the stream
	Checkpoints    int // of which producer checkpoints (envelope v2: acked without a plugin)
	EntryDupes     int // extra entries of an event id (a retried write that had gone through)
	Lost           int // written event ids with no entry in the stream (VIOLATION)
	Processed      int // entries in every plugin's sink (processed by every plugin, acked)
	SinkOnce       int // of which exactly once in every sink
	Forged         int // entries in the stream that do not verify (forged by the scenario)
	ForgedAccepted int // of which in a sink: handed to a plugin (VIOLATION)
	ForgedDLQ      int // of which dead-lettered
	DeadLettered   int // entries in the dead-letter stream with a reason
	DLQGood        int // of which not poison (dead-lettered after max deliveries under faults)
	DLQNoReason    int // dead letters without a reason (VIOLATION)
	PoisonNotDLQ   int // poison entries not dead-lettered (VIOLATION)
	Partial        int // entries seen by only some plugins' sinks (VIOLATION)
	AckedUnproc    int // acked entries neither processed nor dead-lettered (VIOLATION)
	Pending        int // entries still pending at the end (VIOLATION)
	DoubleEmit     int // extra sink records of one entry (VIOLATION: emits are once per ack)
	Redelivered    int // processed entries delivered more than once
	ExtraDeliv     int // deliveries beyond the first, summed (upper bound of duplicates seen by plugins)
	MaxDeliv       int // highest delivery count of a processed entry
	LateAcks       float64
	Reclaimed      float64
	RedisErrors    float64
	Scrapes        float64
	ProducerErrs   int
	ProducerKinds  map[string]int
	ProducerRetry  int // events that needed more than one attempt
	ProducerOutage time.Duration
	Reasons        map[string]int // dead-letter reasons (up to the colon)
	// The processed trail as `auditproc verify` sees it: the replicas'
	// chains on the sinks and the dead-letter stream.
	TrailBroken  int            // gaps, chain breaks, bad signatures, replays (VIOLATION; gaps excused when Redis may lose writes)
	TrailGaps    int            // of which gaps
	TrailKinds   map[string]int // findings by kind, missing tails included
	TrailSources int            // replica sessions seen

	Violations []string
}

func (r *report) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// check reads the stream, the sinks and the dead-letter stream and checks
// the invariant against what the producer wrote. It logs the table and fails
// the test when the invariant does not hold.
func (c *cluster) check(p *producer, scenario string) *report {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := &report{Scenario: scenario, Reasons: map[string]int{}}

	p.mu.Lock()
	written := make(map[string]int, len(p.written))
	for k, v := range p.written {
		written[k] = v
	}
	poison := p.poison
	r.ProducerErrs, r.ProducerKinds, r.ProducerRetry, r.ProducerOutage = p.errs, p.errKinds, len(p.ambiguous), p.longest
	r.Produced = p.sent
	p.mu.Unlock()
	r.Written, r.Poison = len(written), len(poison)
	c.mu.Lock()
	forgedIDs := maps.Clone(c.forged)
	c.mu.Unlock()

	// The stream: entry id -> event id, every entry verified but those the
	// scenario forged.
	entries := c.xrange(ctx, c.names.stream)
	r.StreamEntries = len(entries)
	entryEvent := make(map[string]string, len(entries))
	perEvent := map[string]int{}
	for _, m := range entries {
		env, err := c.keys.Verify(c.names.stream, m.Values)
		if forgedIDs[m.ID] {
			require.Error(c.t, err, "forged stream entry %s must not verify", m.ID)
			r.Forged++
			continue
		}
		require.NoError(c.t, err, "stream entry %s must verify", m.ID)
		if env.IsCheckpoint() {
			r.Checkpoints++
			continue
		}
		var ev struct {
			EventID string `json:"event_id"`
		}
		require.NoError(c.t, json.Unmarshal(env.Event, &ev))
		entryEvent[m.ID] = ev.EventID
		perEvent[ev.EventID]++
	}
	// An event the producer saw fail (or had not finished when it stopped)
	// that went through anyway is kept, and checked like any other.
	for _, n := range perEvent {
		r.EntryDupes += n - 1
	}
	for id := range written {
		if perEvent[id] == 0 {
			r.Lost++
		}
	}

	// The sinks: entry id -> records (and the delivery count at commit).
	first := c.sinkByEntry(ctx, c.names.first, nil)
	deliveries := map[string]int{}
	out := c.sinkByEntry(ctx, c.names.out, deliveries)

	// The dead-letter stream.
	dead := map[string]string{}
	for _, m := range c.xrange(ctx, c.names.dlq) {
		if m.Values["kind"] == "checkpoint" {
			continue // the replicas' chains on the dead-letter stream
		}
		id, _ := m.Values["original_id"].(string)
		reason, _ := m.Values["reason"].(string)
		dead[id] = reason
		if reason == "" {
			r.DLQNoReason++
		}
		label, _, _ := strings.Cut(reason, ":")
		r.Reasons[label]++
	}

	c.checkTrail(ctx, r)

	pendingIDs := c.pendingIDs(ctx)
	r.Pending = len(pendingIDs)

	for entryID, eventID := range entryEvent {
		nf, no := first[entryID], out[entryID]
		_, isDead := dead[entryID]
		switch {
		case nf > 0 && no > 0:
			r.Processed++
			if nf > 1 || no > 1 {
				r.DoubleEmit += max(nf, no) - 1
			} else {
				r.SinkOnce++
			}
			if d := deliveries[entryID]; d > 1 {
				r.Redelivered++
				r.ExtraDeliv += d - 1
			}
			r.MaxDeliv = max(r.MaxDeliv, deliveries[entryID])
		case nf > 0 || no > 0:
			r.Partial++
		case isDead:
		case pendingIDs[entryID]:
		default:
			r.AckedUnproc++
		}
		if isDead {
			r.DeadLettered++
			if !poison[eventID] {
				r.DLQGood++
			}
		} else if poison[eventID] {
			r.PoisonNotDLQ++
		}
	}
	for id := range forgedIDs {
		if first[id] > 0 || out[id] > 0 {
			r.ForgedAccepted++
		}
		if _, isDead := dead[id]; isDead {
			r.ForgedDLQ++
			r.DeadLettered++
		}
	}

	c.mu.Lock()
	r.LateAcks, r.Reclaimed = c.counters["auditproc_late_acks_total"], c.counters["auditproc_entries_reclaimed_total"]
	r.RedisErrors, r.Scrapes = c.counters["auditproc_redis_errors_total"], c.counters["scrapes"]
	c.mu.Unlock()

	// Redis itself may lose writes it acknowledged in some scenarios
	// (c.lossExcuse): with appendfsync everysec when it is killed (its
	// documented window: about a second, more while an fsync is slow); on
	// a cluster, what a master acknowledged but had not yet replicated when
	// it failed, unless min_replicas_acked made the producer wait for a
	// replica. Those never reached auditproc: reported, not a processing
	// violation. Otherwise none may be lost.
	if r.Lost > 0 && c.lossExcuse == "" {
		r.violate("%d event ids the producer was told were written are not in the stream", r.Lost)
	}
	if r.Partial > 0 {
		r.violate("%d entries reached only some plugins' sinks", r.Partial)
	}
	if r.AckedUnproc > 0 {
		r.violate("%d entries were acked without being processed or dead-lettered", r.AckedUnproc)
	}
	if r.Pending > 0 {
		r.violate("%d entries are still pending", r.Pending)
	}
	if r.DoubleEmit > 0 {
		r.violate("%d sink records are doubles of an entry already emitted", r.DoubleEmit)
	}
	if r.DLQNoReason > 0 {
		r.violate("%d dead letters have no reason", r.DLQNoReason)
	}
	if r.PoisonNotDLQ > 0 {
		r.violate("%d poison entries are not in the dead-letter stream", r.PoisonNotDLQ)
	}
	if r.ForgedAccepted > 0 {
		r.violate("%d forged entries reached a plugin's sink", r.ForgedAccepted)
	}
	if r.Forged != len(forgedIDs) && c.lossExcuse == "" {
		r.violate("%d entries were forged, %d are in the stream", len(forgedIDs), r.Forged)
	}
	// A replica killed, or cut off with a commit's outcome unknown, leaves
	// its session without a closing checkpoint (a missing tail): expected.
	// Anything else breaks the chains, unless Redis itself lost writes
	// (c.lossExcuse: killed inside its AOF everysec window, a master failed
	// before it replicated them): gaps. Nothing makes a replay, a chain
	// break or a bad signature.
	if excused := r.TrailGaps; r.TrailBroken > 0 && (c.lossExcuse == "" || r.TrailBroken > excused) {
		r.violate("the processed trail has %d gap(s), chain break(s), bad signature(s) or replay(s): %v", r.TrailBroken, r.TrailKinds)
	}
	if r.Processed+r.DeadLettered != r.StreamEntries-r.Checkpoints {
		r.violate("processed %d + dead-lettered %d != stream entries %d less %d checkpoints", r.Processed, r.DeadLettered, r.StreamEntries, r.Checkpoints)
	}
	table := c.table(r)
	c.t.Log("\n" + table)
	appendReport(c.t, table)
	if len(r.Violations) > 0 {
		c.t.Errorf("invariant violated in %q:\n  %s", scenario, strings.Join(r.Violations, "\n  "))
	}
	return r
}

func (c *cluster) xrange(ctx context.Context, key string) []redis.XMessage {
	c.t.Helper()
	var all []redis.XMessage
	start := "-"
	for {
		msgs, err := c.rdb.XRangeN(ctx, key, start, "+", 5000).Result()
		require.NoError(c.t, err, "XRANGE %s", key)
		all = append(all, msgs...)
		if len(msgs) < 5000 {
			return all
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// sinkByEntry counts a sink's records per source entry id, verifying each;
// deliveries, when not nil, gets each entry's delivery count at commit.
func (c *cluster) sinkByEntry(ctx context.Context, sink string, deliveries map[string]int) map[string]int {
	c.t.Helper()
	counts := map[string]int{}
	for _, m := range c.xrange(ctx, sink) {
		if m.Values["kind"] == "checkpoint" {
			continue // the replicas' chains
		}
		env, err := c.keys.Verify(sink, m.Values)
		require.NoError(c.t, err, "sink %s entry %s must be signed", sink, m.ID)
		var rec struct {
			EntryID    string `json:"entry_id"`
			Deliveries int    `json:"deliveries"`
		}
		require.NoError(c.t, json.Unmarshal(env.Event, &rec))
		counts[rec.EntryID]++
		if deliveries != nil {
			deliveries[rec.EntryID] = rec.Deliveries
		}
	}
	return counts
}

func (c *cluster) pendingIDs(ctx context.Context) map[string]bool {
	c.t.Helper()
	ids := map[string]bool{}
	ps, err := c.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: c.names.stream, Group: group, Start: "-", End: "+", Count: 100000}).Result()
	require.NoError(c.t, err)
	for _, p := range ps {
		ids[p.ID] = true
	}
	return ids
}

// table renders what happened and the invariant.
func (c *cluster) table(r *report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "=== invariant: %s\n", r.Scenario)
	c.mu.Lock()
	for _, e := range c.events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	c.mu.Unlock()
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(name string, v any, note string) {
		fmt.Fprintf(w, "  %s\t%v\t  %s\n", name, v, note)
	}
	ok := func(n int) string {
		if n == 0 {
			return "ok"
		}
		return "VIOLATION"
	}
	row("events produced", r.Produced, "distinct events the producer sent, each retried until acknowledged")
	row("events written (producer acknowledged)", r.Written, fmt.Sprintf("%d of them poison", r.Poison))
	row("stream entries", r.StreamEntries, fmt.Sprintf("%d extra: a retried write that had gone through; %d producer checkpoints; %d forged", r.EntryDupes, r.Checkpoints, r.Forged))
	lostNote := ok(r.Lost)
	if r.Lost > 0 && c.lossExcuse != "" {
		lostNote = c.lossExcuse
	}
	lostRow := "lost (written, not in stream)"
	if c.masterFailed {
		lostRow = "lost with the old master (written, not in stream)"
	}
	row(lostRow, r.Lost, lostNote)
	row("processed by every plugin and acked", r.Processed, "")
	row("in every sink exactly once", r.SinkOnce, "the ack and the emits are one commit")
	row("dead-lettered with a reason", r.DeadLettered, reasons(r.Reasons)+fmt.Sprintf("; %d good events among them, %d forged entries", r.DLQGood, r.ForgedDLQ))
	if r.Forged > 0 {
		row("forged entries accepted (in a sink)", r.ForgedAccepted, ok(r.ForgedAccepted)+fmt.Sprintf("; of %d forged", r.Forged))
	}
	row("poison not dead-lettered", r.PoisonNotDLQ, ok(r.PoisonNotDLQ))
	row("dead letters without a reason", r.DLQNoReason, ok(r.DLQNoReason))
	row("seen by only some plugins", r.Partial, ok(r.Partial))
	row("acked, neither processed nor dead-lettered", r.AckedUnproc, ok(r.AckedUnproc))
	row("still pending", r.Pending, ok(r.Pending))
	row("doubled emits (same entry twice in a sink)", r.DoubleEmit, ok(r.DoubleEmit))
	row("entries delivered more than once", r.Redelivered, fmt.Sprintf("at-least-once: %d deliveries beyond the first, at most %d for one entry", r.ExtraDeliv, r.MaxDeliv))
	row("late acks (entry finished elsewhere)", strconv.FormatFloat(r.LateAcks, 'f', 0, 64), fmt.Sprintf("harmless: nothing emitted; from %0.f scrapes of live replicas", r.Scrapes))
	row("entries reclaimed from idle consumers", strconv.FormatFloat(r.Reclaimed, 'f', 0, 64), "")
	row("replicas' failed Redis operations", strconv.FormatFloat(r.RedisErrors, 'f', 0, 64), "")
	row("producer: failed attempts (retried)", r.ProducerErrs, kinds(r.ProducerKinds))
	row("producer: events needing a retry", r.ProducerRetry, fmt.Sprintf("longest outage seen %s", r.ProducerOutage.Round(time.Millisecond)))
	trailNote := ok(r.TrailBroken)
	if r.TrailBroken > 0 && r.TrailBroken == r.TrailGaps && c.lossExcuse != "" {
		trailNote = "gaps only: writes Redis lost (" + c.lossExcuse + ") may be chained ones"
	}
	row("processed trail: gaps, breaks, forgeries, replays", r.TrailBroken, fmt.Sprintf("%s; %d replica sessions, findings %v (a missing tail: a session that did not close)", trailNote, r.TrailSources, r.TrailKinds))
	verdict := "HOLDS"
	if len(r.Violations) > 0 {
		verdict = "VIOLATED"
	}
	row("invariant", verdict, "")
	_ = w.Flush()
	return b.String()
}

func reasons(m map[string]int) string {
	if len(m) == 0 {
		return "no reasons"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func kinds(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	return "(" + reasons(m) + ")"
}

// EnvReport names a file every invariant table is appended to, so that a
// run of the whole suite (make test) can print them even for passing tests.
const EnvReport = "AUDITPROC_FAULTS_REPORT"

func appendReport(t interface {
	Name() string
	Errorf(string, ...any)
}, table string) {
	path := os.Getenv(EnvReport)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("%s: %v", EnvReport, err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(t.Name() + "\n" + table + "\n"); err != nil {
		t.Errorf("%s: %v", EnvReport, err)
	}
}

// checkTrail walks the sinks and the dead-letter stream as `auditproc
// verify --all` does and counts its findings into r.
func (c *cluster) checkTrail(ctx context.Context, r *report) {
	c.t.Helper()
	bus, err := streambus.New(streambus.Config{}, nil, c.rdb, c.keys)
	require.NoError(c.t, err)
	checker := trail.New(c.keys, trail.Config{FromStart: true, DeadLetters: map[string]bool{c.names.dlq: true}})
	for _, s := range []string{c.names.first, c.names.out, c.names.dlq} {
		for start := "-"; ; {
			page, err := bus.XRange(ctx, s, start, "+", 5000)
			require.NoError(c.t, err, "XRANGE %s", s)
			entries := make([]trail.Entry, len(page))
			for i, e := range page {
				entries[i] = trail.Entry{ID: e.ID, Fields: e.Fields}
			}
			checker.AddPage(s, entries)
			if len(page) < 5000 {
				break
			}
			start = "(" + page[len(page)-1].ID
		}
	}
	findings, sources := checker.Finish()
	r.TrailKinds, r.TrailSources = map[string]int{}, len(sources)
	for _, f := range findings {
		r.TrailKinds[f.Kind]++
		if f.Kind != trail.MissingTail {
			r.TrailBroken++
		}
		if f.Kind == trail.Gap {
			r.TrailGaps++
		}
	}
}
