package host

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/auditproc/auditproc/abi"
)

// rateLimiter is a token bucket of log lines per second, shared by every
// instance of a plugin.
type rateLimiter struct {
	mu      sync.Mutex
	rate    float64
	tokens  float64
	last    time.Time
	dropped uint64
}

func newRateLimiter(perSecond int) *rateLimiter {
	return &rateLimiter{rate: float64(perSecond), tokens: float64(perSecond)}
}

// allow takes a token; it also returns how many lines were dropped since the
// last allowed one.
func (r *rateLimiter) allow() (ok bool, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !r.last.IsZero() {
		r.tokens = min(r.rate, r.tokens+now.Sub(r.last).Seconds()*r.rate)
	}
	r.last = now
	if r.tokens < 1 {
		r.dropped++
		return false, 0
	}
	r.tokens--
	dropped, r.dropped = r.dropped, 0
	return true, dropped
}

// logLine logs one line of the guest, capped and rate-limited.
func (p *Plugin) logLine(ctx context.Context, level slog.Level, source string, line []byte) {
	if !p.logger.Enabled(ctx, level) {
		return
	}
	ok, dropped := p.logs.allow()
	if !ok {
		return
	}
	if dropped > 0 {
		p.logger.WarnContext(ctx, "plugin_log_lines_dropped", "lines", dropped)
	}
	truncated := false
	if len(line) > abi.DefaultMaxLogBytes {
		line, truncated = line[:abi.DefaultMaxLogBytes], true
		for len(line) > 0 && !utf8.Valid(line[len(line)-min(len(line), utf8.UTFMax):]) {
			line = line[:len(line)-1]
		}
	}
	attrs := []any{"source", source, "line", string(line)}
	if truncated {
		attrs = append(attrs, "truncated", true)
	}
	p.logger.Log(ctx, level, "plugin_logged", attrs...)
}

// lineWriter is a guest's stdout or stderr: it logs complete lines, caps a
// line at abi.DefaultMaxLogBytes and drops the rest of an overlong line.
type lineWriter struct {
	p        *Plugin
	stream   string
	buf      []byte
	skipping bool // the current line overflowed and was logged; drop until '\n'
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if !w.skipping {
			room := abi.DefaultMaxLogBytes - len(w.buf)
			if len(chunk) > room {
				w.buf = append(w.buf, chunk[:room]...)
				w.emit()
				w.skipping = true
			} else {
				w.buf = append(w.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !w.skipping {
			w.emit()
		}
		w.skipping = false
		b = b[i+1:]
	}
	return n, nil
}

func (w *lineWriter) emit() {
	level := slog.LevelInfo
	if w.stream == "stderr" {
		level = slog.LevelWarn
	}
	w.p.logLine(context.Background(), level, w.stream, w.buf)
	w.buf = w.buf[:0]
}

// flush logs a last line without its newline.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 && !w.skipping {
		w.emit()
	}
	w.buf, w.skipping = nil, false
}
