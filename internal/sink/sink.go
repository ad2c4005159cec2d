package sink

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Item is one derived event to deliver.
type Item struct {
	// EventID is the event's event_id: the idempotency key.
	EventID string
	// EntryID is the stream entry the event was derived from.
	EntryID string
	// Stream is the input stream of that entry.
	Stream string
	// KeyID is the id of the key that signed that entry.
	KeyID string
	// Event is the event, a JSON object that holds event_id and timestamp.
	Event []byte
}

// Sink is an external destination.
type Sink interface {
	// Write delivers items and returns once the destination confirmed them
	// (see the package documentation for the errors).
	Write(ctx context.Context, items []Item) error
	// Close releases connections; in-flight writes end first.
	Close() error
}

// PermanentError is a refusal the destination will repeat on every retry
// (an HTTP 400, a row PostgreSQL cannot store): the entry is dead-lettered
// with it instead of being retried.
type PermanentError struct {
	Sink   string
	Reason string // what the destination answered, bounded in length
}

func (e *PermanentError) Error() string {
	return fmt.Sprintf("sink %q refused the event for good: %s", e.Sink, e.Reason)
}

// IsPermanent reports whether err is (or wraps) a *PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// BatchError is a partial result: Errs[i] is the outcome of items[i] (nil:
// confirmed).
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	failed, permanent := 0, 0
	var first error
	for _, err := range e.Errs {
		if err == nil {
			continue
		}
		failed++
		if IsPermanent(err) {
			permanent++
		}
		if first == nil {
			first = err
		}
	}
	return fmt.Sprintf("%d of %d items failed (%d for good), first: %v", failed, len(e.Errs), permanent, first)
}

func (e *BatchError) Unwrap() []error { return e.Errs }

// ItemErrors spreads the outcome of a Write of n items over the items:
// nil for every confirmed item, the item's error otherwise.
func ItemErrors(err error, n int) []error {
	out := make([]error, n)
	if err == nil {
		return out
	}
	var b *BatchError
	if errors.As(err, &b) && len(b.Errs) == n {
		copy(out, b.Errs)
		return out
	}
	for i := range out {
		out[i] = err
	}
	return out
}

// truncate bounds a destination's answer kept in an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Metrics count every sink's writes, errors and latency, labelled by sink
// name. The processor updates them around each write.
type Metrics struct {
	Writes  *prometheus.CounterVec   // auditproc_sink_writes_total: events confirmed
	Errors  *prometheus.CounterVec   // auditproc_sink_errors_total: failed writes
	Latency *prometheus.HistogramVec // auditproc_sink_latency_seconds: one write
}

// NewMetrics creates the sink metrics and registers them on reg (when not
// nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_sink_writes_total", Help: "Events a sink confirmed (written, synced or acknowledged by the destination) before their entries were acked, by sink.",
		}, []string{"sink"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproc_sink_errors_total", Help: "Failed writes to a sink, by sink: each is retried while the entries wait unacknowledged, or, when the destination refused an event for good, its entry is dead-lettered.",
		}, []string{"sink"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "auditproc_sink_latency_seconds",
			Help:    "Time one write of a batch to a sink took, until the destination confirmed or failed.",
			Buckets: []float64{1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5, 30},
		}, []string{"sink"}),
	}
	if reg != nil {
		reg.MustRegister(m.Writes, m.Errors, m.Latency)
	}
	return m
}
