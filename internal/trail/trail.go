// Package trail checks that an audit trail is whole: given every entry of a
// stream in stream order, it reports each entry that does not verify, each
// ambiguous entry (a field named twice), and, for chained sources (envelope
// version 2), each replay, gap, chain break and missing tail. It does no
// I/O: `auditproc verify` feeds it pages of XRANGE; the fuzz tests feed it
// anything.
package trail

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// Kinds of Finding.
const (
	// BadSignature: the entry does not verify (signature mismatch, unknown
	// key id, malformed or unsigned; Detail says which).
	BadSignature = "bad_signature"
	// Ambiguous: the entry names a field twice.
	Ambiguous = "ambiguous_entry"
	// Replay: the entry's (source, seq) was seen before under another id.
	Replay = "replay"
	// Gap: sequence numbers of a source are missing: entries deleted.
	Gap = "gap"
	// MissingTail: a source's last entry is not its closing checkpoint
	// and the source has been silent for longer than its checkpoint
	// interval allows: entries at its end were deleted, or it stopped
	// without closing.
	MissingTail = "missing_tail"
	// ChainBreak: an entry's prev is not the sig of its source's previous
	// entry.
	ChainBreak = "chain_break"
)

// Finding is one problem of the trail.
type Finding struct {
	Stream string `json:"stream"`
	// EntryID is the entry at fault; for a gap the first entry after it,
	// for a missing tail the source's last entry.
	EntryID string `json:"entry_id"`
	Source  string `json:"source,omitempty"`
	Kind    string `json:"kind"`
	Seq     uint64 `json:"seq,omitempty"`
	Detail  string `json:"detail"`
}

// SourceSummary is what the checker saw of one source on one stream.
type SourceSummary struct {
	Stream  string `json:"stream"`
	Source  string `json:"source"`
	First   uint64 `json:"first_seq"`
	Last    uint64 `json:"last_seq"`
	Entries int    `json:"entries"`
	Closed  bool   `json:"closed"`
}

// Config tunes a Checker.
type Config struct {
	// FromStart says the walk began at the start of the stream, so a
	// source first seen past seq 1 lost its first entries. A walk from a
	// later id (--from) cannot tell, and takes a source's first seq seen as
	// its start.
	FromStart bool
	// Now is the time a source's silence is measured against for a
	// missing tail (the end of the walk: now, or the time of --to).
	Now time.Time
	// DefaultInterval is the checkpoint interval assumed for a source
	// whose checkpoint was not seen. Default
	// integrity.DefaultCheckpointInterval.
	DefaultInterval time.Duration
	// Window is how many sequence numbers below the newest of a source
	// keep their entry ids for replay reports. Default 1<<16.
	Window uint64
	// DeadLetters names the dead-letter streams: there a dead letter
	// without a seal was written before auditproc sealed them: it is
	// counted in Unsealed, not a finding.
	DeadLetters map[string]bool
}

// Checker walks the entries of streams, each stream in stream order.
type Checker struct {
	keys     *integrity.Keyring
	cfg      Config
	findings []Finding
	sources  map[sourceKey]*source
	// withdrawn are the withdrawals seen, per letter source and seq.
	withdrawn map[sourceKey]map[uint64]string
	// sealed are the streams where a chained entry was seen: an unsealed
	// dead letter after it is a finding.
	sealed map[string]bool
	// Counts. Voids are the checkpoints that stand in for an entry their
	// writer withdrew (integrity.Checkpoint.Void).
	// Withdrawn are the dead letters deleted after a replay whose
	// withdrawal took their place.
	Entries, Unchained, Checkpoints, Voids, Unsealed, Withdrawn int
}

type sourceKey struct{ stream, src string }

type link struct {
	id, sig, prev string
	ms            int64
	checkpoint    bool
	cp            integrity.Checkpoint
}

type source struct {
	stream, src string
	first       uint64
	next        uint64 // the lowest seq not yet linked
	head        string // sig of seq next-1
	last        link   // the entry next-1
	entries     int
	pending     map[uint64]link // seen, above a hole
	seen        map[uint64]string
	interval    time.Duration
	maxSeen     uint64
}

// New returns a Checker that verifies with keys.
func New(keys *integrity.Keyring, cfg Config) *Checker {
	if cfg.DefaultInterval <= 0 {
		cfg.DefaultInterval = integrity.DefaultCheckpointInterval
	}
	if cfg.Window == 0 {
		cfg.Window = 1 << 16
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	return &Checker{keys: keys, cfg: cfg, sources: map[sourceKey]*source{},
		withdrawn: map[sourceKey]map[uint64]string{}, sealed: map[string]bool{}}
}

// RepeatedField returns the first field name of fields (name, value, …)
// that appears twice.
func RepeatedField(fields []string) (string, bool) {
	if len(fields) > 32 {
		seen := make(map[string]struct{}, len(fields)/2)
		for i := 0; i < len(fields); i += 2 {
			if _, ok := seen[fields[i]]; ok {
				return fields[i], true
			}
			seen[fields[i]] = struct{}{}
		}
		return "", false
	}
	for i := 2; i < len(fields); i += 2 {
		for j := 0; j < i; j += 2 {
			if fields[i] == fields[j] {
				return fields[i], true
			}
		}
	}
	return "", false
}

// Entry is one stream entry as stored: its id and its fields (name,
// value, …) in stream order.
type Entry struct {
	ID     string
	Fields []string
}

// verdict is an entry's verification: a repeated field, or
// VerifyFields's result.
type verdict struct {
	repeated string
	dup      bool
	unsealed bool
	env      integrity.Envelope
	err      error
	// signedMS is the entry's signed timestamp (Unix ms), 0 when it has
	// none (a sealed entry).
	signedMS int64
}

func (c *Checker) verify(stream string, fields []string) verdict {
	if integrity.IsSealed(fields) {
		// The seal's MAC covers every field in order, a copy of an
		// ambiguous entry's fields included: only the letter's own fields
		// must be named once.
		if name, dup := repeatedOwnField(fields); dup {
			return verdict{repeated: name, dup: true}
		}
		env, err := c.keys.VerifySealed(stream, fields)
		return verdict{env: env, err: err}
	}
	if c.cfg.DeadLetters[stream] && (streambus.RawEntry{Fields: fields}).IsDeadLetter() {
		return verdict{unsealed: true}
	}
	if name, dup := RepeatedField(fields); dup {
		return verdict{repeated: name, dup: true}
	}
	env, err := c.keys.VerifyFields(stream, fields)
	v := verdict{env: env, err: err}
	if err == nil && env.Chained() {
		if ts, perr := time.Parse(time.RFC3339Nano, gjson.GetBytes(env.Event, "timestamp").Str); perr == nil {
			v.signedMS = ts.UnixMilli()
		}
	}
	return v
}

// repeatedOwnField is RepeatedField of a sealed entry's fields other than
// its copied ones (named with streambus.DeadLetterFieldPrefix).
func repeatedOwnField(fields []string) (string, bool) {
	own := make([]string, 0, 24)
	for i := 0; i+1 < len(fields); i += 2 {
		if !strings.HasPrefix(fields[i], streambus.DeadLetterFieldPrefix) {
			own = append(own, fields[i], fields[i+1])
		}
	}
	return RepeatedField(own)
}

// parallelChunk is the smallest share of a page worth a goroutine.
const parallelChunk = 128

// AddPage checks entries of stream, the next ones in stream order: their
// signatures on every core, then their place in the chains, in order.
func (c *Checker) AddPage(stream string, entries []Entry) {
	verdicts := make([]verdict, len(entries))
	verify := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			verdicts[i] = c.verify(stream, entries[i].Fields)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(entries)/parallelChunk)
	if workers < 2 {
		verify(0, len(entries))
	} else {
		var wg sync.WaitGroup
		size := (len(entries) + workers - 1) / workers
		for lo := 0; lo < len(entries); lo += size {
			wg.Go(func() { verify(lo, min(lo+size, len(entries))) })
		}
		wg.Wait()
	}
	for i, e := range entries {
		c.add(stream, e.ID, e.Fields, verdicts[i])
	}
}

// Add checks one entry of stream, read in stream order.
func (c *Checker) Add(stream, id string, fields []string) {
	c.add(stream, id, fields, c.verify(stream, fields))
}

func (c *Checker) add(stream, id string, fields []string, v verdict) {
	c.Entries++
	if v.unsealed {
		if c.sealed[stream] {
			c.report(Finding{Stream: stream, EntryID: id, Kind: BadSignature,
				Detail: "unsigned: a dead letter without a seal after the stream's first sealed or chained entry: written without the key"})
			return
		}
		c.Unsealed++
		return
	}
	if v.dup {
		c.report(Finding{Stream: stream, EntryID: id, Source: fieldValue(fields, integrity.FieldSource), Kind: Ambiguous,
			Detail: fmt.Sprintf("malformed_envelope: field %q named twice: readers disagree on its value", truncate(v.repeated))})
		return
	}
	env, err := v.env, v.err
	if err != nil {
		c.report(Finding{Stream: stream, EntryID: id, Source: fieldValue(fields, integrity.FieldSource), Kind: BadSignature,
			Detail: integrity.Reason(err) + ": " + err.Error()})
		return
	}
	if !env.Chained() {
		c.Unchained++
		return
	}
	c.sealed[stream] = true
	if env.IsCheckpoint() {
		c.Checkpoints++
	}
	if env.Kind == integrity.KindSealed {
		c.withdraw(stream, id, fields)
	}
	// A source's silence is judged by the older of the entry's stream id
	// time and its signed timestamp: the id is not signed, and an entry
	// deleted and added again gets a new one.
	ms := idMillis(id)
	if v.signedMS > 0 && v.signedMS < ms {
		ms = v.signedMS
	}
	l := link{id: strings.Clone(id), sig: strings.Clone(env.Sig), prev: strings.Clone(env.Prev), ms: ms, checkpoint: env.IsCheckpoint()}
	if l.checkpoint {
		l.cp, _ = integrity.ParseCheckpoint(env.Event) // verified already
		if l.cp.Void != "" {
			c.Voids++
		}
	}
	c.link(stream, env.Source, env.Seq, l)
}

func (c *Checker) link(stream, src string, seq uint64, l link) {
	key := sourceKey{stream, src}
	s := c.sources[key]
	if s == nil {
		s = &source{stream: stream, src: strings.Clone(src), first: seq, next: 1, pending: map[uint64]link{}, seen: map[uint64]string{}, interval: c.cfg.DefaultInterval}
		if !c.cfg.FromStart {
			s.next = seq
		}
		c.sources[key] = s
	}
	s.entries++
	if seq < s.first {
		s.first = seq
	}
	if seq < s.next || s.pending[seq].id != "" {
		first := s.seen[seq]
		if p, ok := s.pending[seq]; ok {
			first = p.id
		}
		detail := fmt.Sprintf("seq %d of this source was already seen", seq)
		if first != "" {
			detail = fmt.Sprintf("seq %d of this source was already seen as entry %s", seq, first)
		}
		c.report(Finding{Stream: stream, EntryID: l.id, Source: s.src, Kind: Replay, Seq: seq, Detail: detail})
		return
	}
	s.maxSeen = max(s.maxSeen, seq)
	if seq > s.next {
		s.pending[seq] = l
		return
	}
	c.advance(s, seq, l)
	for {
		p, ok := s.pending[s.next]
		if !ok {
			break
		}
		delete(s.pending, s.next)
		c.advance(s, s.next, p)
	}
	if s.next > c.cfg.Window && len(s.seen) > int(2*c.cfg.Window) {
		for q := range s.seen {
			if q+c.cfg.Window < s.next {
				delete(s.seen, q)
			}
		}
	}
}

// withdraw links, when the sealed entry id is a withdrawal (`dlq replay`
// deleting a sealed dead letter it replayed), the deleted letter's seal in
// its place in the letter's chain, so that the deletion is no gap. A
// withdrawal whose letter is still there (the replay stopped before the
// deletion) adds nothing.
func (c *Checker) withdraw(stream, id string, fields []string) {
	w := streambus.RawEntry{Fields: fields}
	src := w.Value(streambus.WithdrawnSource)
	seq, err := strconv.ParseUint(w.Value(streambus.WithdrawnSeq), 10, 64)
	if src == "" || err != nil || seq == 0 {
		return
	}
	key := sourceKey{stream, src}
	if first, twice := c.withdrawn[key][seq]; twice {
		c.report(Finding{Stream: stream, EntryID: strings.Clone(id), Source: strings.Clone(src), Kind: Replay, Seq: seq,
			Detail: fmt.Sprintf("dead letter seq %d of this source was already withdrawn by entry %s: a copy of the letter was replayed again", seq, first)})
		return
	}
	if c.withdrawn[key] == nil {
		c.withdrawn[key] = map[uint64]string{}
	}
	c.withdrawn[key][seq] = strings.Clone(id)
	s := c.sources[key]
	if s != nil && (seq < s.next || s.pending[seq].id != "") {
		return // the letter is still there: the replay stopped before deleting it
	}
	c.Withdrawn++
	c.link(stream, src, seq, link{id: strings.Clone(id), ms: idMillis(id),
		sig: strings.Clone(w.Value(streambus.WithdrawnSig)), prev: strings.Clone(w.Value(streambus.WithdrawnPrev))})
}

// advance links entry seq (== s.next) after the chain's head.
func (c *Checker) advance(s *source, seq uint64, l link) {
	if seq > 1 && s.head != "" && l.prev != s.head {
		c.report(Finding{Stream: s.stream, EntryID: l.id, Source: s.src, Kind: ChainBreak, Seq: seq,
			Detail: fmt.Sprintf("prev is not the sig of seq %d (entry %s): the entry does not follow it", seq-1, s.last.id)})
	}
	if l.checkpoint && l.cp.IntervalMS > 0 {
		s.interval = time.Duration(l.cp.IntervalMS) * time.Millisecond
	}
	s.seen[seq] = l.id
	s.head, s.last, s.next = l.sig, l, seq+1
	if l.checkpoint && l.cp.Void != "" {
		s.head = l.cp.Void // the source's next entry follows the one withdrawn
	}
}

// Finish reports what only the end of the walk shows: gaps never filled
// and missing tails. It returns every finding, in the order found, and the
// sources seen.
func (c *Checker) Finish() ([]Finding, []SourceSummary) {
	keys := make([]sourceKey, 0, len(c.sources))
	for k := range c.sources {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b sourceKey) int {
		return strings.Compare(a.stream+"\x00"+a.src, b.stream+"\x00"+b.src)
	})
	var summaries []SourceSummary
	for _, k := range keys {
		s := c.sources[k]
		// Holes: link what is above each one, in order.
		for len(s.pending) > 0 {
			lowest := slices.Min(slicesKeys(s.pending))
			p := s.pending[lowest]
			delete(s.pending, lowest)
			c.report(Finding{Stream: s.stream, EntryID: p.id, Source: s.src, Kind: Gap, Seq: lowest,
				Detail: fmt.Sprintf("%s missing before seq %d: entries deleted", seqRange(s.next, lowest-1), lowest)})
			s.head = "" // the link across the hole cannot be checked
			c.advance(s, lowest, p)
			for {
				q, ok := s.pending[s.next]
				if !ok {
					break
				}
				delete(s.pending, s.next)
				c.advance(s, s.next, q)
			}
		}
		closed := s.last.checkpoint && s.last.cp.Closing
		if !closed {
			silent := c.cfg.Now.Sub(time.UnixMilli(s.last.ms))
			if allowed := s.interval + s.interval/2; silent > allowed {
				c.report(Finding{Stream: s.stream, EntryID: s.last.id, Source: s.src, Kind: MissingTail, Seq: s.next - 1,
					Detail: fmt.Sprintf("last entry seq %d is %s old and not a closing checkpoint (checkpoints every %s): entries after it were deleted, or the source stopped without closing",
						s.next-1, roundAge(silent), s.interval)})
			}
		}
		summaries = append(summaries, SourceSummary{Stream: s.stream, Source: s.src, First: s.first, Last: s.next - 1, Entries: s.entries, Closed: closed})
	}
	return c.findings, summaries
}

// roundAge rounds a duration for a person: milliseconds below 10 s.
func roundAge(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func (c *Checker) report(f Finding) { c.findings = append(c.findings, f) }

func slicesKeys(m map[uint64]link) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func seqRange(lo, hi uint64) string {
	if lo == hi {
		return fmt.Sprintf("seq %d (1 entry)", lo)
	}
	return fmt.Sprintf("seq %d-%d (%d entries)", lo, hi, hi-lo+1)
}

// fieldValue is the first value of the field name, truncated for a
// report.
func fieldValue(fields []string, name string) string {
	return truncate(streambus.RawEntry{Fields: fields}.Value(name))
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return strings.Clone(s)
}

// idMillis is the milliseconds part of a stream id.
func idMillis(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}
