package processor

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/auditproc/auditproc/internal/streambus"
)

// maxBackoff caps the wait between retries of a failing operation.
const maxBackoff = 5 * time.Second

// retryHooks say what a failure of one kind of operation means.
type retryHooks struct {
	// failed is called after each failure (failures counts them, 1 first),
	// before waiting backoff; log says whether to log it (the first
	// failure, then at most one a minute).
	failed func(failures int, backoff time.Duration, err error, log bool)
	// recovered is called when op succeeds after failures.
	recovered func(failures int)
}

// retry runs op until it succeeds or ctx ends, backing off (capped)
// between failures.
func retry(ctx context.Context, op func() error, h retryHooks) error {
	backoff := 50 * time.Millisecond
	var lastLog time.Time
	failures := 0
	for {
		err := op()
		if err == nil {
			if failures > 0 {
				h.recovered(failures)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		log := time.Since(lastLog) > time.Minute
		if log {
			lastLog = time.Now()
		}
		h.failed(failures, backoff, err, log)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// retryRedis runs a Redis operation until it succeeds or ctx ends. While it
// fails, the processor is not ready and auditproc_redis_errors_total counts
// the failures.
func (p *Processor) retryRedis(ctx context.Context, opName string, op func() error) error {
	return retry(ctx, op, retryHooks{
		failed: func(failures int, backoff time.Duration, err error, log bool) {
			p.setReady(false)
			// Redis answered, if with an error (a commit its replicas do
			// not confirm, a reply error): the client is not stuck, and a
			// restart would not help; /readyz tells, /healthz does not
			// fail. A timeout proves nothing.
			if streambus.IsRedisError(err) || errors.Is(err, streambus.ErrNotReplicated) {
				p.lastRead.Store(time.Now().UnixNano())
			}
			p.metrics.RedisErrors.WithLabelValues(opName).Inc()
			if log {
				p.log.Error("redis_operation_failed", slog.String("op", opName), slog.Int("failures", failures),
					slog.Duration("retry_in", backoff), slog.String("error", err.Error()))
			}
		},
		recovered: func(failures int) {
			p.log.Info("redis_recovered", slog.String("op", opName), slog.Int("failures", failures))
			p.setReady(true)
		},
	})
}

// retrySink runs a write to a line sink until it succeeds or ctx ends. A
// failing sink (a full disk) is not a Redis problem: it counts in
// auditproc_sink_errors_total and leaves readiness alone; the entries of
// the batch wait, unacknowledged, meanwhile.
func (p *Processor) retrySink(ctx context.Context, s *sink, op func() error) error {
	return retry(ctx, op, retryHooks{
		failed: func(failures int, backoff time.Duration, err error, log bool) {
			p.metrics.SinkErrors.WithLabelValues(s.name).Inc()
			if log {
				p.log.Error("sink_write_failed", slog.String("sink", s.name), slog.String("type", string(s.kind)),
					slog.Int("failures", failures), slog.Duration("retry_in", backoff), slog.String("error", err.Error()))
			}
		},
		recovered: func(failures int) {
			p.log.Info("sink_recovered", slog.String("sink", s.name), slog.Int("failures", failures))
		},
	})
}
