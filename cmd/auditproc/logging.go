package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// newLogger builds the process logger: JSON by default, text when format is
// "text", or "auto" and w is a terminal.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: secondsAttr}
	if format == "text" || (format == "auto" && isTerminal(w)) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// secondsAttr writes every duration as seconds, a number, under its key with
// "_seconds" appended ("retry_in_seconds": 0.25), as Prometheus and log
// pipelines expect; slog's JSON handler would write bare nanoseconds.
func secondsAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindDuration {
		return a
	}
	key := a.Key
	if !strings.HasSuffix(key, "_seconds") {
		key += "_seconds"
	}
	return slog.Float64(key, a.Value.Duration().Seconds())
}

// redisLogger passes go-redis's own log lines (pool and dial failures,
// which go-redis prints with the standard log package by default) through
// slog as JSON lines on w, at warning level, like every other line.
type redisLogger struct{ log *slog.Logger }

func newRedisLogger(w io.Writer) redisLogger {
	return redisLogger{slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: secondsAttr}))}
}

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis_client", slog.String("detail", strings.TrimSpace(fmt.Sprintf(format, v...))))
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
