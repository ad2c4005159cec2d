package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

func emitCommand() *command {
	var (
		cf     *configFlags
		file   string
		maxLen int64
		quiet  bool
		source string
	)
	return &command{
		name:    "emit",
		summary: "sign audit events and append them to the stream",
		usage:   "[flags] [JSON_EVENT ...]",
		examples: `  # one event from the command line (event_id and timestamp are added)
  auditproc emit '{"actor":"alice","action":"login","outcome":"success"}'

  # a JSON-lines file, with a progress bar on a terminal
  auditproc emit --file events.jsonl

  # from another program
  produce-events | auditproc emit --file -

Every line is checked before anything is written: a file with a bad line is
refused whole (exit 2), so a run never stops half-way through its input
because of the input.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.StringVar(&file, "file", "", "JSON-lines file of events, or - for standard input (default: arguments, else standard input)")
			fs.Int64Var(&maxLen, "max-len", 0, "trim the stream to about this many entries (MAXLEN ~); 0 never trims, the audit default")
			fs.BoolVar(&quiet, "quiet", false, "print nothing but errors")
			fs.StringVar(&source, "source", "", "this producer's name in the signed chain (envelope v2; default: emit.<host name>)")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if file != "" && len(args) > 0 {
				return usagef("emit: give events as arguments or with --file, not both")
			}
			if maxLen < 0 {
				return usagef("emit: --max-len must not be negative")
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			events, err := collectEvents(sio, file, args)
			if err != nil {
				return err
			}
			if source == "" {
				source = defaultEmitSource()
			}
			if !integrity.ValidSourceID(source + "/x") {
				return usagef("emit: --source %q: want 1-%d characters of [A-Za-z0-9._-]", source, integrity.MaxKeyIDLen)
			}
			return emitEvents(ctx, sio, &cfg, events, maxLen, quiet, file != "" && file != "-", source)
		},
	}
}

// collectEvents reads and checks every event before any is written.
func collectEvents(sio stdio, file string, args []string) ([][]byte, error) {
	var events [][]byte
	if len(args) > 0 {
		for i, a := range args {
			if err := checkEvent([]byte(a)); err != nil {
				return nil, usagef("emit: argument %d: %v", i+1, err)
			}
			events = append(events, []byte(a))
		}
		return events, nil
	}
	var r io.Reader = sio.in
	name := "standard input"
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("emit: %v", err)
		}
		defer f.Close()
		r, name = f, file
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), integrity.DefaultMaxEventBytes+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := checkEvent(line); err != nil {
			return nil, usagef("emit: %s line %d: %v; nothing was written", name, n, err)
		}
		events = append(events, bytes.Clone(line))
	}
	if err := sc.Err(); err != nil {
		return nil, usagef("emit: %s: %v; nothing was written", name, err)
	}
	if len(events) == 0 {
		return nil, usagef("emit: no events in %s", name)
	}
	return events, nil
}

func checkEvent(b []byte) error {
	if len(b) > integrity.DefaultMaxEventBytes {
		return fmt.Errorf("event is %d bytes, more than the %d allowed", len(b), integrity.DefaultMaxEventBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("not a JSON object: %v", err)
	}
	// Stamp's checks: event_id, timestamp, a member named twice.
	if _, _, err := integrity.Stamp(b, time.Now()); err != nil {
		return err
	}
	return nil
}

// defaultEmitSource is "emit.<host name>", made a valid source name.
func defaultEmitSource() string { return hostSource("emit") }

// hostSource is "<prefix>.<host name>", made a valid source name.
func hostSource(prefix string) string {
	host, _ := os.Hostname()
	name := []byte(prefix + "." + host)
	for i, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			name[i] = '-'
		}
	}
	return string(name[:min(len(name), integrity.MaxKeyIDLen)])
}

func emitEvents(ctx context.Context, sio stdio, cfg *config.Config, events [][]byte, maxLen int64, quiet, progress bool, source string) error {
	keys, err := integrity.LoadKeyring(os.Getenv)
	if err != nil {
		return usageError{err}
	}
	rdb, err := redisClient(cfg)
	if err != nil {
		return usageError{err}
	}
	defer rdb.Close()
	bus, err := streambus.New(streambus.Config{Source: source}, slog.New(slog.DiscardHandler), rdb, keys)
	if err != nil {
		return err
	}
	// The chain ends with its closing checkpoint however emit ends, so that
	// a reader of the trail knows this run stopped cleanly.
	cpctx, stopCheckpoints := context.WithCancel(ctx)
	go bus.RunCheckpoints(cpctx)
	defer func() {
		stopCheckpoints()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := bus.CloseChain(cctx); err != nil {
			fmt.Fprintf(sio.err, "emit: closing checkpoint of %s not written: %v\n", bus.Source(), err)
		}
	}()
	bar := newProgress(sio.err, len(events), progress && isTerminal(sio.err))
	var first, last string
	start := time.Now()
	for i, ev := range events {
		e, err := bus.XAdd(ctx, cfg.Stream.Name, ev, maxLen)
		if err != nil {
			bar.done()
			if i > 0 {
				return fmt.Errorf("emit: event %d of %d: %w (events 1–%d were written, ids %s to %s)", i+1, len(events), err, i, first, last)
			}
			return fmt.Errorf("emit: event 1 of %d: %w (nothing was written)", len(events), err)
		}
		if i == 0 {
			first = e.ID
		}
		last = e.ID
		bar.set(i + 1)
	}
	bar.done()
	if !quiet {
		took := time.Since(start)
		fmt.Fprintf(sio.out, "emitted %d event(s) to %s, signed with key %q as source %s, ids %s to %s, in %s (%.0f/s)\n",
			len(events), cfg.Stream.Name, keys.ActiveKeyID(), bus.Source(), first, last, took.Round(time.Millisecond), float64(len(events))/took.Seconds())
	}
	return nil
}

// progress draws a one-line progress bar on a terminal, at most ten times a
// second; elsewhere it draws nothing.
type progress struct {
	w     io.Writer
	total int
	on    bool
	last  time.Time
}

func newProgress(w io.Writer, total int, on bool) *progress {
	return &progress{w: w, total: total, on: on}
}

func (p *progress) set(n int) {
	if !p.on || (time.Since(p.last) < 100*time.Millisecond && n < p.total) {
		return
	}
	p.last = time.Now()
	const width = 30
	filled := width * n / max(p.total, 1)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d", bytes.Repeat([]byte("#"), filled), bytes.Repeat([]byte("."), width-filled), n, p.total)
}

func (p *progress) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}
