package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
)

// defaultEmitTimeout is how long emit waits for Redis to take an event
// before giving up (without --spool).
const defaultEmitTimeout = 30 * time.Second

func emitCommand() *command {
	var (
		cf       *configFlags
		file     string
		maxLen   int64
		quiet    bool
		spoolDir string
		spoolMax int64
		timeout  time.Duration
	)
	return &command{
		name:    "emit",
		summary: "sign audit events and append them to the stream",
		usage:   "[flags] [JSON_EVENT ...]",
		examples: `  # one event from the command line (event_id and timestamp are added)
  auditproc emit '{"actor":"alice","action":"login","outcome":"success"}'

  # a JSON-lines file, with a progress bar on a terminal
  auditproc emit --file events.jsonl

  # from another program, spooling to disk while Redis is away
  produce-events | auditproc emit --file - --spool /var/spool/auditproc

A file is read twice: first every line is checked with every rule signing
applies (JSON object, UTF-8, event_id and timestamp, the 1 MiB limit), and a
file with a bad line is refused whole (exit 2) before anything is written;
then the events are signed and appended in pipelined batches, in constant
memory. Standard input is copied to a temporary file for the two passes.

Event ids emit adds are derived from the file's content and the line, and
Redis remembers which lines of a file it holds (24 hours): running the same
file again after a failure part-way writes only what is missing, never an
event twice. To append the same lines again as new events, change the file.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.StringVar(&file, "file", "", "JSON-lines file of events, or - for standard input (default: arguments, else standard input)")
			fs.Int64Var(&maxLen, "max-len", 0, "trim the stream to about this many entries (MAXLEN ~); 0 never trims, the audit default")
			fs.BoolVar(&quiet, "quiet", false, "print nothing but errors")
			fs.StringVar(&spoolDir, "spool", "", "directory where signed events wait, fsynced, while Redis is away (sent in order once it is back; see 'auditproc spool')")
			fs.Int64Var(&spoolMax, "spool-max", audit.DefaultSpoolMaxBytes, "most bytes the spool may hold")
			durationVar(fs, &timeout, "timeout", defaultEmitTimeout, "without --spool: how long to wait for Redis before giving up")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if file != "" && len(args) > 0 {
				return usagef("emit: give events as arguments or with --file, not both")
			}
			if maxLen < 0 || spoolMax < 0 || timeout <= 0 {
				return usagef("emit: --max-len and --spool-max must not be negative, --timeout must be positive")
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			keys, err := audit.LoadKeyring(os.Getenv)
			if err != nil {
				return usageError{err}
			}
			ikeys, err := integrity.LoadKeyring(os.Getenv)
			if err != nil {
				return usageError{err}
			}
			e := &emitter{sio: sio, cfg: &cfg, keys: keys, maxBytes: ikeys.MaxEventBytes(), maxLen: maxLen, quiet: quiet,
				spool: spoolDir, spoolMax: spoolMax, timeout: timeout}
			if len(args) > 0 {
				return e.emitArgs(ctx, args)
			}
			return e.emitFile(ctx, file)
		},
	}
}

type emitter struct {
	sio      stdio
	cfg      *config.Config
	keys     *audit.Keyring
	maxBytes int
	maxLen   int64
	quiet    bool
	spool    string
	spoolMax int64
	timeout  time.Duration
}

func (e *emitter) emitArgs(ctx context.Context, args []string) error {
	for i, a := range args {
		if _, err := integrity.CheckEvent([]byte(a), e.maxBytes); err != nil {
			return usagef("emit: argument %d: %s; nothing was written", i+1, ruleError(err))
		}
	}
	return e.send(ctx, "", len(args), false, func(send func([]byte) error) error {
		for _, a := range args {
			if err := send([]byte(a)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ruleError names the rule an event broke.
func ruleError(err error) string {
	var ee *integrity.EventError
	if errors.As(err, &ee) {
		return fmt.Sprintf("rule %s: %s", ee.Rule, ee.Problem)
	}
	return err.Error()
}

// emitFile checks every line of the file (standard input: copied to a
// temporary file on the way), then sends them.
func (e *emitter) emitFile(ctx context.Context, file string) error {
	name := file
	var src io.Reader
	var tmp *os.File
	if file == "" || file == "-" {
		name = "standard input"
		var err error
		if tmp, err = os.CreateTemp("", "auditproc-emit-*.jsonl"); err != nil {
			return fmt.Errorf("emit: a temporary file for standard input: %w", err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		src = io.TeeReader(e.sio.in, tmp)
	} else {
		f, err := os.Open(file)
		if err != nil {
			return usagef("emit: %v", err)
		}
		defer f.Close()
		src = f
	}
	// Pass 1: every rule on every line, and the content's hash (taken by
	// the goroutine reading, beside the checks).
	h := sha256.New()
	n, err := checkLines(ctx, io.TeeReader(src, h), e.maxBytes, runtime.GOMAXPROCS(0), eventChecker(name, e.maxBytes))
	if err != nil {
		var ue usageError
		switch {
		case errors.As(err, &ue):
			return err
		case ctx.Err() != nil && errors.Is(err, ctx.Err()): // interrupted: not the user's mistake
			return fmt.Errorf("emit: %s: %w; nothing was written", name, err)
		}
		return usagef("emit: %s: %v; nothing was written", name, err)
	}
	if n == 0 {
		return usagef("emit: no events in %s", name)
	}
	// Pass 2: the same bytes again.
	var again io.Reader
	if tmp != nil {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		again = tmp
	} else {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		again = f
	}
	producer := "emit-" + hex.EncodeToString(h.Sum(nil))[:32]
	sum := sha256.New()
	err = e.send(ctx, producer, n, file != "" && file != "-", func(send func([]byte) error) error {
		return eachLine(io.TeeReader(again, sum), e.maxBytes, func(line []byte, _ int) error { return send(line) })
	})
	if err == nil && !bytes.Equal(sum.Sum(nil), h.Sum(nil)) {
		return fmt.Errorf("emit: %s changed while it was read: its events were written as read the second time", name)
	}
	return err
}

// eventChecker is pass 1's check of a line of the file name: every rule
// signing applies.
func eventChecker(name string, maxBytes int) func(line []byte, no int) error {
	return func(line []byte, no int) error {
		if _, err := integrity.CheckEvent(line, maxBytes); err != nil {
			return usagef("emit: %s line %d: %s; nothing was written", name, no, ruleError(err))
		}
		return nil
	}
}

// Pass 1 hands lines to its checkers in chunks of checkChunkLines lines or
// about checkChunkBytes bytes, whichever is reached first (more only for a
// single longer line): enough that handing a chunk over costs little beside
// checking it, few enough that the chunks in flight stay small.
const (
	checkChunkLines = 512
	checkChunkBytes = 256 << 10
)

// lineChunk is consecutive lines copied out of the reader's buffer.
type lineChunk struct {
	buf   []byte
	lines []chunkLine
}

type chunkLine struct{ end, no int }

// check calls check on the lines in order, up to the first it refuses,
// which it returns with its number.
func (c *lineChunk) check(check func(line []byte, no int) error) (int, error) {
	start := 0
	for _, l := range c.lines {
		if err := check(c.buf[start:l.end], l.no); err != nil {
			return l.no, err
		}
		start = l.end
	}
	return 0, nil
}

// checkLines calls check on every line eachLine(r, maxBytes, ...) passes
// and counts them, as a loop over eachLine would, but with the checks on
// workers goroutines while the calling one goes on reading r (and hashing,
// if r does). The outcome is the loop's: the count; else the error of the
// refused line with the lowest number, not of whichever checker failed
// first; else eachLine's own error (a line too long, a read error), which
// comes after every line it passed. Once ctx is done, its error.
//
// Lines travel in chunks copied into workers+2 buffers used again and
// again, so memory stays bounded whatever the size of r. Reading stops at
// the first chunk after a refused line or once ctx is done, and every
// goroutine has ended when checkLines returns.
func checkLines(ctx context.Context, r io.Reader, maxBytes, workers int, check func(line []byte, no int) error) (int, error) {
	workers = max(workers, 1)
	reading, stopReading := context.WithCancel(ctx)
	defer stopReading()
	free := make(chan *lineChunk, workers+2)
	for range cap(free) {
		free <- &lineChunk{} // grown as lines come: a small file needs little
	}
	full := make(chan *lineChunk)
	var (
		mu     sync.Mutex
		badNo  int // the lowest line number refused so far; 0 for none
		badErr error
	)
	// A chunk that starts after a refused line cannot hold the lowest.
	refusedBefore := func(no int) bool {
		mu.Lock()
		defer mu.Unlock()
		return badNo != 0 && badNo < no
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range full {
				if ctx.Err() == nil && !refusedBefore(c.lines[0].no) {
					if no, err := c.check(check); err != nil {
						mu.Lock()
						if badNo == 0 || no < badNo {
							badNo, badErr = no, err
						}
						mu.Unlock()
						stopReading()
					}
				}
				c.buf, c.lines = c.buf[:0], c.lines[:0]
				free <- c
			}
		})
	}
	// The checkers always hand chunks back, so neither full <- nor <-free
	// waits for long.
	n := 0
	c := <-free
	readErr := eachLine(r, maxBytes, func(line []byte, no int) error {
		if len(c.lines) == checkChunkLines || (len(c.lines) > 0 && len(c.buf)+len(line) > checkChunkBytes) {
			if err := reading.Err(); err != nil {
				return err
			}
			full <- c
			c = <-free
		}
		c.buf = append(c.buf, line...)
		c.lines = append(c.lines, chunkLine{end: len(c.buf), no: no})
		n++
		return nil
	})
	if len(c.lines) > 0 {
		full <- c // even after an error: a line before it may be refused
	}
	close(full)
	wg.Wait()
	switch {
	case ctx.Err() != nil: // whatever was refused: the checkers skipped chunks
		return 0, ctx.Err()
	case badErr != nil:
		return 0, badErr
	case readErr != nil:
		return 0, readErr
	}
	return n, nil
}

// eachLine calls f with every non-blank line (trimmed) and its number. A
// line longer than maxBytes (plus surrounding blanks) is an error naming
// the line and the limit, read past in constant memory.
func eachLine(r io.Reader, maxBytes int, f func(line []byte, no int) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for no := 1; ; no++ {
		long = long[:0]
		tooLong := false
		var line []byte
		for {
			chunk, err := br.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				if len(long)+len(chunk) > maxBytes+1024 {
					tooLong = true
				} else {
					long = append(long, chunk...)
				}
				continue
			}
			if len(long) > 0 || tooLong {
				if !tooLong && len(long)+len(chunk) <= maxBytes+1024 {
					long = append(long, chunk...)
					line = long
				} else {
					tooLong = true
				}
			} else {
				line = chunk
			}
			if err == io.EOF {
				if len(line) == 0 && !tooLong {
					return nil
				}
			} else if err != nil {
				return err
			}
			break
		}
		if tooLong {
			return usagef("emit: line %d is longer than the limit of an event, %s: nothing was written", no, integrity.SizeName(maxBytes))
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			if err := f(t, no); err != nil {
				return err
			}
		}
		if len(line) == 0 || line[len(line)-1] != '\n' {
			return nil // the last line had no newline
		}
	}
}

// send appends n events through a Producer named producer ("" for a
// random name) and reports what became of them.
func (e *emitter) send(ctx context.Context, producer string, n int, progress bool, each func(send func([]byte) error) error) error {
	rdb, err := redisClient(e.cfg)
	if err != nil {
		return usageError{err}
	}
	defer rdb.Close()
	logger := newLogger(e.sio.err, "text", "warn")
	p, err := audit.NewProducer(audit.Config{
		Client: rdb, Keys: e.keys, Stream: e.cfg.Stream.Name, MaxLen: e.maxLen,
		Shards: e.cfg.ShardCount(), PartitionKey: e.cfg.Stream.PartitionKey,
		WriteTimeout: e.cfg.Redis.IOTimeout, ProducerID: producer, Source: hostSource("emit"),
		SpoolDir: e.spool, SpoolMaxBytes: e.spoolMax,
		MinReplicasAcked: e.cfg.Redis.MinReplicasAcked, MinReplicasTimeout: e.cfg.Redis.MinReplicasTimeout,
		// Two round trips per shard: one in flight, the next one filling.
		// A file gains nothing from more (docs/performance.md, "Producers").
		QueueSize: 2 * audit.DefaultPipeline * audit.DefaultBatchSize * e.cfg.ShardCount(),
	}, logger)
	if err != nil {
		return usageError{err}
	}
	bar := newProgress(e.sio.err, n, progress && isTerminal(e.sio.err))
	start := time.Now()
	sent := 0
	var sendErr error
	// One deadline per 256 events rather than a timer per event: each
	// Send may wait up to --timeout for room in the queue.
	sctx, cancel := context.WithTimeout(ctx, e.timeout)
	err = each(func(line []byte) error {
		if _, err := p.Send(sctx, line); err != nil {
			return err
		}
		sent++
		if sent%256 == 0 {
			cancel()
			sctx, cancel = context.WithTimeout(ctx, e.timeout)
			bar.set(sent)
		}
		return nil
	})
	cancel()
	if err != nil {
		sendErr = err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.timeout)
	defer cancel()
	if ctx.Err() != nil {
		// Interrupted: what is queued gets one short chance (or the spool).
		cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), e.cfg.Redis.IOTimeout)
		defer cancel()
	}
	closeErr := p.Close(cctx)
	bar.set(sent)
	bar.done()
	st := p.Stats()
	took := time.Since(start)
	ok := int64(st.Written + st.Duplicates + st.Spooled)
	if sendErr != nil || closeErr != nil || ok < int64(n) {
		what := "not written"
		if r := e.cfg.Redis.MinReplicasAcked; r > 0 {
			what = fmt.Sprintf("not written, or not confirmed by %d replica(s) (redis.min_replicas_acked)", r)
		}
		return fmt.Errorf("emit: %d of %d event(s) %s (%d written, %d already there, %d spooled): %w; "+
			"run the same command again: the events Redis holds are skipped",
			int64(n)-ok, n, what, st.Written, st.Duplicates, st.Spooled, errors.Join(sendErr, closeErr))
	}
	if !e.quiet {
		fmt.Fprintf(e.sio.out, "emitted %d event(s) to %s: %d written, %d already there", n, shardsLabel(e.cfg.Stream.Name, e.cfg.ShardCount()), st.Written, st.Duplicates)
		if e.spool != "" {
			fmt.Fprintf(e.sio.out, ", %d spooled in %s (%d waiting)", st.Spooled, e.spool, st.SpoolEvents)
		}
		fmt.Fprintf(e.sio.out, "; signed with key %q, in %s (%.0f/s)\n", e.keys.ActiveKeyID(), took.Round(time.Millisecond), float64(n)/took.Seconds())
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

// hostSource is "<prefix>.<host name>", made a valid source name.
func hostSource(prefix string) string {
	host, _ := os.Hostname()
	return integrity.SourceName(prefix + "." + host)
}
