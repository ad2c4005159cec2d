package processor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	extsink "github.com/auditproc/auditproc/internal/sink"
)

// SinkKind is the type of a sink.
type SinkKind string

// Sink kinds.
const (
	// SinkStream is a Redis stream: emits are signed and committed in the
	// same atomic step as the ack (exactly once per processed entry).
	SinkStream SinkKind = "stream"
	// SinkFile appends JSON lines to a file, synced before the ack (at
	// least once).
	SinkFile SinkKind = "file"
	// SinkStdout writes JSON lines to standard output (at least once).
	SinkStdout SinkKind = "stdout"
	// SinkPostgres, SinkSyslog and SinkHTTP are external destinations:
	// written and confirmed before the ack (at least once, idempotent on
	// event_id), through Sink.Dest.
	SinkPostgres SinkKind = "postgres"
	SinkSyslog   SinkKind = "syslog"
	SinkHTTP     SinkKind = "http"
)

// External reports whether k is an external destination.
func (k SinkKind) External() bool {
	return k == SinkPostgres || k == SinkSyslog || k == SinkHTTP
}

// Sink is where a plugin's emits go.
type Sink struct {
	Type SinkKind
	// Stream for a stream sink.
	Stream string
	// Path for a file sink.
	Path string
	// Dest writes to an external destination; the processor closes it.
	Dest extsink.Sink
}

func (s Sink) validate() error {
	switch s.Type {
	case SinkStream:
		if s.Stream == "" {
			return errors.New("a stream sink needs a stream")
		}
	case SinkFile:
		if s.Path == "" {
			return errors.New("a file sink needs a path")
		}
	case SinkStdout:
	case SinkPostgres, SinkSyslog, SinkHTTP:
		if s.Dest == nil {
			return fmt.Errorf("a %s sink needs its destination opened", s.Type)
		}
	default:
		return fmt.Errorf("unknown type %q", s.Type)
	}
	return nil
}

// sink is an open sink.
type sink struct {
	name   string
	kind   SinkKind
	stream string       // SinkStream
	line   *lineSink    // SinkFile, SinkStdout
	dest   extsink.Sink // SinkPostgres, SinkSyslog, SinkHTTP
}

// openSinks opens the line sinks of cfg.
func openSinks(cfg map[string]Sink) (map[string]*sink, error) {
	sinks := make(map[string]*sink, len(cfg))
	for name, c := range cfg {
		s := &sink{name: name, kind: c.Type, stream: c.Stream, dest: c.Dest}
		switch c.Type {
		case SinkFile:
			ls, err := openFileSink(name, c.Path)
			if err != nil {
				closeSinks(sinks)
				return nil, err
			}
			s.line = ls
		case SinkStdout:
			s.line = newWriterSink(name, stdoutWriter{})
		}
		sinks[name] = s
	}
	return sinks, nil
}

func closeSinks(sinks map[string]*sink) {
	for _, s := range sinks {
		if s.line != nil {
			_ = s.line.close()
		}
		if s.dest != nil {
			_ = s.dest.Close()
		}
	}
}

type stdoutWriter struct{}

func (stdoutWriter) Write(b []byte) (int, error) { return os.Stdout.Write(b) }

// lineSink appends derived events as JSON lines to a file or to stdout. Such
// sinks are at-least-once: a line is written (and, for files, synced) before
// the entry is acked, so a crash between the two repeats the line after the
// entry is redelivered. Consumers of the file deduplicate by event_id.
type lineSink struct {
	name string
	mu   sync.Mutex
	w    *bufio.Writer
	dst  io.Writer
	f    *os.File // nil for stdout
}

func openFileSink(name, path string) (*lineSink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("sink %q: open %w", name, err)
	}
	return &lineSink{name: name, w: bufio.NewWriterSize(f, 64<<10), dst: f, f: f}, nil
}

func newWriterSink(name string, w io.Writer) *lineSink {
	return &lineSink{name: name, w: bufio.NewWriterSize(w, 64<<10), dst: w}
}

// write appends events, one per line, and makes them durable before
// returning: flushed, and fsynced for files.
func (s *lineSink) write(events [][]byte) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if err != nil {
			// bufio keeps its first error forever: start afresh so that a
			// passing failure (a full disk freed again) does not stop the
			// sink for the rest of the run.
			s.w.Reset(s.dst)
		}
	}()
	for _, ev := range events {
		if _, err := s.w.Write(ev); err != nil {
			return fmt.Errorf("sink %q: write: %w", s.name, err)
		}
		if err := s.w.WriteByte('\n'); err != nil {
			return fmt.Errorf("sink %q: write: %w", s.name, err)
		}
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("sink %q: flush: %w", s.name, err)
	}
	if s.f != nil {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("sink %q: sync: %w", s.name, err)
		}
	}
	return nil
}

func (s *lineSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.w.Flush()
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
