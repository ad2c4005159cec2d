package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/trail"
)

// verifyPage is how many entries one XRANGE of verify reads (a variable
// for tests).
var verifyPage int64 = 1000

// verifyFetchers is how many XRANGEs verify keeps in flight, and
// verifySegmentPages the pages of a stream's share one of them walks (a
// variable for tests).
const verifyFetchers = 3

var verifySegmentPages int64 = 4

// verifyPageOf is a page of entries of one stream, in stream order, or the
// error that ended the walk.
type verifyPageOf struct {
	stream  string
	entries []trail.Entry
	err     error
}

// fetchPages reads streams (lens their lengths), each from from to to,
// and returns their pages in stream order, one stream after the other.
//
// One XRANGE after another leaves Redis idle while a page travels and is
// parsed, and verify idle while Redis builds the next. So each stream's
// id range is cut by time into segments of about verifySegmentPages pages
// (by its length and the times of its first and last entries), and
// verifyFetchers goroutines walk consecutive segments at once, each page
// by page. The pages are handed on in segment order; a fetcher runs at
// most two pages ahead of the checker, its segment at most verifyFetchers
// ahead. The segments cover the range without gap or overlap whatever the
// entries' spread; the last one ends at to, so a walk to "+" also reads
// what was added while it ran.
func fetchPages(ctx context.Context, bus *streambus.Bus, streams []string, lens []int64, from, to string) <-chan verifyPageOf {
	type job struct {
		stream, start, end string
		out                chan verifyPageOf
	}
	jobs := make(chan job)
	order := make(chan chan verifyPageOf, verifyFetchers)
	send := func(ch chan verifyPageOf, p verifyPageOf) bool {
		select {
		case ch <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for range verifyFetchers {
		go func() {
			for j := range jobs {
				start := j.start
				for {
					got, err := bus.XRange(ctx, j.stream, start, j.end, verifyPage)
					p := verifyPageOf{stream: j.stream, err: err, entries: make([]trail.Entry, len(got))}
					for i, e := range got {
						p.entries[i] = trail.Entry{ID: e.ID, Fields: e.Fields}
					}
					if !send(j.out, p) || err != nil || int64(len(got)) < verifyPage {
						break
					}
					start = "(" + got[len(got)-1].ID
				}
				close(j.out)
			}
		}()
	}
	pages := make(chan verifyPageOf, 2)
	// The dispatcher: segments to the fetchers, their outputs in order.
	go func() {
		defer close(order)
		defer close(jobs)
		dispatch := func(stream, start, end string) bool {
			out := make(chan verifyPageOf, 2)
			select {
			case order <- out:
			case <-ctx.Done():
				return false
			}
			select {
			case jobs <- job{stream: stream, start: start, end: end, out: out}:
				return true
			case <-ctx.Done():
				close(out) // the collector waits for every segment's end
				return false
			}
		}
		for i, s := range streams {
			bounds, err := segmentBounds(ctx, bus, s, lens[i], from, to)
			if err != nil {
				out := make(chan verifyPageOf, 1)
				out <- verifyPageOf{stream: s, err: err}
				close(out)
				select {
				case order <- out:
				case <-ctx.Done():
				}
				return
			}
			for k := 0; k+1 < len(bounds); k += 2 {
				if !dispatch(s, bounds[k], bounds[k+1]) {
					return
				}
			}
		}
	}()
	// The collector: each segment's pages, segment after segment.
	go func() {
		defer close(pages)
		for out := range order {
			for p := range out {
				if !send(pages, p) {
					return
				}
			}
		}
	}()
	return pages
}

// segmentBounds cuts the range from-to of stream (n entries long) into
// segments of about verifySegmentPages pages: start, end, start, end, …
// (XRANGE bounds, inclusive; the first is from, the last to). Bounds in
// between are whole milliseconds: "ms" starts at ms-0 and ends at the
// last id of ms, so neighbouring segments neither overlap nor leave a gap.
func segmentBounds(ctx context.Context, bus *streambus.Bus, stream string, n int64, from, to string) ([]string, error) {
	segments := n / (verifyPage * verifySegmentPages)
	if segments < 2 {
		return []string{from, to}, nil
	}
	first, err := bus.XRange(ctx, stream, from, to, 1)
	if err != nil {
		return nil, err
	}
	last, err := bus.XRevRange(ctx, stream, to, from, 1)
	if err != nil {
		return nil, err
	}
	if len(first) == 0 || len(last) == 0 {
		return []string{from, to}, nil
	}
	lo, hi := idMillis(first[0].ID), idMillis(last[0].ID)
	span := hi - lo + 1
	if span < 2 {
		return []string{from, to}, nil
	}
	width := (span + segments - 1) / segments
	bounds := []string{from}
	for cut := lo + width; cut <= hi; cut += width {
		bounds = append(bounds, strconv.FormatInt(cut-1, 10), strconv.FormatInt(cut, 10))
	}
	return append(bounds, to), nil
}

func verifyCommand() *command {
	var (
		cf       *configFlags
		all      bool
		from, to string
		asJSON   bool
		quiet    bool
	)
	return &command{
		name:    "verify",
		summary: "prove a trail whole: every signature, no ambiguous entry, replay, gap, missing tail or chain break",
		usage:   "[--stream NAME] [--all] [--from ID] [--to ID] [--json]",
		examples: `  auditproc verify                      # the configured stream
  auditproc verify --all --json         # and its dead-letter and sink streams
  auditproc verify --stream audit:stream --from 1767225600000-0

verify reads with XRANGE, page by page, and never writes. It reports each
entry that does not verify (bad_signature), names a field twice
(ambiguous_entry), repeats a source's sequence number (replay), follows a
hole in a source's sequence (gap: entries deleted), does not link to its
source's previous entry (chain_break), and each source whose last entry is
not its closing checkpoint and that has been silent longer than its
checkpoint interval allows (missing_tail). Exit 0: no findings; 1: findings;
2: usage, configuration or Redis error. See docs/trail.md.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.BoolVar(&all, "all", false, "also verify the dead-letter stream and every stream sink of the configuration")
			fs.StringVar(&from, "from", "-", "first entry id (a walk from a later id takes each source's first entry seen as its start)")
			fs.StringVar(&to, "to", "+", "last entry id (a missing tail is judged at its time)")
			fs.BoolVar(&asJSON, "json", false, "print one JSON document: findings and sources")
			fs.BoolVar(&quiet, "quiet", false, "no progress bar")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("verify takes no arguments, got %q (streams go in --stream)", args)
			}
			for _, id := range []string{from, to} {
				if !validRangeID(id) {
					return usagef("verify: %q is not a stream entry id (ms-seq, ms, - or +)", id)
				}
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			keys, err := integrity.LoadKeyring(os.Getenv)
			if err != nil {
				return usageError{err}
			}
			// --stream (the configuration flag) names the stream; with
			// stream.shards, every shard's.
			streams := cfg.StreamShards()
			deadLetters := map[string]bool{}
			for _, d := range cfg.DeadLetterShards() {
				deadLetters[d] = true
			}
			if all {
				for k := range cfg.ShardCount() {
					sc := cfg.ShardConfig(k)
					streams = append(streams, sc.DeadLetter.Stream)
					for _, name := range slices.Sorted(maps.Keys(sc.Sinks)) {
						if s := sc.Sinks[name]; s.Type == config.SinkStream {
							streams = append(streams, s.Stream)
						}
					}
				}
			}
			streams = slices.Compact(streams)
			rdb, err := redisClient(&cfg)
			if err != nil {
				return usageError{err}
			}
			defer rdb.Close()
			bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, keys)
			if err != nil {
				return err
			}
			now := time.Now()
			if to != "+" {
				now = time.UnixMilli(idMillis(to))
			}
			var total int64
			lens := make([]int64, len(streams))
			for i, s := range streams {
				n, err := rdb.XLen(ctx, s).Result()
				if err != nil {
					return usageError{fmt.Errorf("verify: stream %q: %w", s, err)}
				}
				lens[i] = n
				total += n
			}
			// A short-lived process with a small heap: the same GC headroom
			// as run's (gc.go) spares it most collections.
			if stop := tuneGC(os.Getenv); stop != nil {
				defer stop()
			}
			checker := trail.New(keys, trail.Config{FromStart: from == "-", Now: now,
				DeadLetters: deadLetters})
			bar := newProgress(sio.err, int(total), !quiet && !asJSON && isTerminal(sio.err))
			fctx, cancel := context.WithCancel(ctx)
			defer cancel()
			pages := fetchPages(fctx, bus, streams, lens, from, to)
			done := 0
			for p := range pages {
				// p.err ends the walk: the deferred cancel stops the fetchers.
				if p.err != nil {
					bar.done()
					return usageError{fmt.Errorf("verify: %w (%d entries read before)", p.err, done)}
				}
				checker.AddPage(p.stream, p.entries)
				done += len(p.entries)
				bar.set(done)
			}
			bar.done()
			if err := ctx.Err(); err != nil {
				return err // interrupted: the walk is not whole
			}
			findings, sources := checker.Finish()
			if asJSON {
				enc := json.NewEncoder(sio.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(verifyReport{
					OK: len(findings) == 0, Streams: streams, Entries: checker.Entries, Unchained: checker.Unchained,
					Checkpoints: checker.Checkpoints, Voids: checker.Voids, Unsealed: checker.Unsealed, Withdrawn: checker.Withdrawn,
					Sources: nonNil(sources), Findings: nonNil(findings),
				}); err != nil {
					return err
				}
			} else {
				printFindings(sio, findings)
				closed := 0
				for _, s := range sources {
					if s.Closed {
						closed++
					}
				}
				fmt.Fprintf(sio.out, "verified %d entries of %s: %d chained source(s) (%d closed), %d checkpoints (%d voids), %d unchained (v1) entries",
					checker.Entries, strings.Join(streams, ", "), len(sources), closed, checker.Checkpoints, checker.Voids, checker.Unchained)
				if checker.Unsealed > 0 || checker.Withdrawn > 0 {
					fmt.Fprintf(sio.out, ", %d unsealed and %d withdrawn dead letters", checker.Unsealed, checker.Withdrawn)
				}
				fmt.Fprintf(sio.out, "; %d finding(s)\n", len(findings))
			}
			if len(findings) > 0 {
				return errSilent
			}
			return nil
		},
	}
}

// verifyReport is verify's --json output.
type verifyReport struct {
	OK          bool     `json:"ok"`
	Streams     []string `json:"streams"`
	Entries     int      `json:"entries"`
	Unchained   int      `json:"unchained"`
	Checkpoints int      `json:"checkpoints"`
	// Voids stand in for entries their writer signed but did not append;
	// Unsealed are dead letters written without a seal; Withdrawn are
	// dead letters replayed and deleted with a withdrawal.
	Voids     int                   `json:"voids"`
	Unsealed  int                   `json:"unsealed_dead_letters"`
	Withdrawn int                   `json:"withdrawn_dead_letters"`
	Sources   []trail.SourceSummary `json:"sources"`
	Findings  []trail.Finding       `json:"findings"`
}

func printFindings(sio stdio, findings []trail.Finding) {
	if len(findings) == 0 {
		return
	}
	w := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "STREAM\tENTRY ID\tSOURCE\tSEQ\tFINDING\tDETAIL")
	for _, f := range findings {
		seq := "-"
		if f.Seq > 0 {
			seq = strconv.FormatUint(f.Seq, 10)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Stream, f.EntryID, orDash(f.Source), seq, f.Kind, f.Detail)
	}
	_ = w.Flush()
}

func validRangeID(id string) bool {
	if id == "-" || id == "+" {
		return true
	}
	id = strings.TrimPrefix(id, "(")
	ms, seq, hasSeq := strings.Cut(id, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if hasSeq {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return false
		}
	}
	return true
}

func idMillis(id string) int64 {
	ms, _, _ := strings.Cut(strings.TrimPrefix(id, "("), "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
