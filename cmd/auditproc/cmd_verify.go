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

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/trail"
)

// verifyPage is how many entries one XRANGE of verify reads.
const verifyPage = 1000

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
			// --stream (the configuration flag) names the stream.
			streams := []string{cfg.Stream.Name}
			if all {
				streams = append(streams, cfg.DeadLetter.Stream)
				for _, name := range slices.Sorted(maps.Keys(cfg.Sinks)) {
					if s := cfg.Sinks[name]; s.Type == "stream" {
						streams = append(streams, s.Stream)
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
			for _, s := range streams {
				n, err := rdb.XLen(ctx, s).Result()
				if err != nil {
					return usageError{fmt.Errorf("verify: stream %q: %w", s, err)}
				}
				total += n
			}
			checker := trail.New(keys, trail.Config{FromStart: from == "-", Now: now})
			bar := newProgress(sio.err, int(total), !quiet && !asJSON && isTerminal(sio.err))
			// Pages are fetched one ahead of the checker, so that Redis and
			// the verification work at once.
			type page struct {
				stream  string
				entries []trail.Entry
				err     error
			}
			pages := make(chan page, 2)
			fctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				defer close(pages)
				for _, s := range streams {
					start := from
					for {
						got, err := bus.XRange(fctx, s, start, to, verifyPage)
						p := page{stream: s, err: err, entries: make([]trail.Entry, len(got))}
						for i, e := range got {
							p.entries[i] = trail.Entry{ID: e.ID, Fields: e.Fields}
						}
						select {
						case pages <- p:
						case <-fctx.Done():
							return
						}
						if err != nil || len(got) < verifyPage {
							break
						}
						start = "(" + got[len(got)-1].ID
					}
				}
			}()
			done := 0
			for p := range pages {
				if p.err != nil {
					bar.done()
					return usageError{fmt.Errorf("verify: %w (%d entries read before)", p.err, done)}
				}
				checker.AddPage(p.stream, p.entries)
				done += len(p.entries)
				bar.set(done)
			}
			bar.done()
			findings, sources := checker.Finish()
			if asJSON {
				enc := json.NewEncoder(sio.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(verifyReport{
					OK: len(findings) == 0, Streams: streams, Entries: checker.Entries, Unchained: checker.Unchained,
					Checkpoints: checker.Checkpoints, Sources: nonNil(sources), Findings: nonNil(findings),
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
				fmt.Fprintf(sio.out, "verified %d entries of %s: %d chained source(s) (%d closed), %d checkpoints, %d unchained (v1) entries; %d finding(s)\n",
					checker.Entries, strings.Join(streams, ", "), len(sources), closed, checker.Checkpoints, checker.Unchained, len(findings))
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
	OK          bool                  `json:"ok"`
	Streams     []string              `json:"streams"`
	Entries     int                   `json:"entries"`
	Unchained   int                   `json:"unchained"`
	Checkpoints int                   `json:"checkpoints"`
	Sources     []trail.SourceSummary `json:"sources"`
	Findings    []trail.Finding       `json:"findings"`
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
