package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// startWorkers opens one pipeline worker (its plugin instances) per
// configured worker.
func (p *Processor) startWorkers(ctx context.Context) ([]pipelineWorker, error) {
	workers := make([]pipelineWorker, p.cfg.Workers)
	for i := range workers {
		g := p.gens.acquire()
		w, err := g.pipeline.NewWorker(ctx)
		if err != nil {
			g.release()
			for _, w := range workers[:i] {
				w.release()
			}
			return nil, fmt.Errorf("start worker %d: %w", i, err)
		}
		workers[i] = pipelineWorker{w: w, gen: g}
	}
	return workers, nil
}

// pipelineWorker is a worker's plugin instances and the generation they
// belong to.
type pipelineWorker struct {
	w   *host.Worker
	gen *generation
}

func (pw pipelineWorker) release() {
	pw.w.Release()
	pw.gen.release()
}

// current moves pw to the current generation when Reload replaced its own,
// between two chunks. When the new pipeline cannot open its instances, pw
// stays on its generation and the next chunk tries again.
func (p *Processor) current(ctx context.Context, pw pipelineWorker) pipelineWorker {
	if p.gens.cur.Load() == pw.gen {
		return pw
	}
	g := p.gens.acquire()
	w, err := g.pipeline.NewWorker(ctx)
	if err != nil {
		g.release()
		p.log.Warn("worker_reload_failed", slog.String("error", err.Error()))
		return pw
	}
	pw.release()
	return pipelineWorker{w: w, gen: g}
}

// runWorker runs the pipeline over every chunk of entries it receives and
// sends the results on, until jobs is closed; then it releases its
// instances. slot is its slot in the crash journal.
func (p *Processor) runWorker(ctx context.Context, slot int, pw pipelineWorker, jobs <-chan []streambus.Entry, results chan<- *[]work) {
	defer func() { pw.release() }()
	for chunk := range jobs {
		// A chunk runs wholly on one pipeline; a reload takes effect
		// between chunks.
		pw = p.current(ctx, pw)
		w, obs := pw.w, pw.gen.obs
		out := p.chunk(len(chunk))
		for i := range chunk {
			e := &chunk[i]
			p.journal.begin(slot, e.ID)
			res := w.Process(ctx, host.Event{
				EntryID: e.ID, Stream: e.Stream, KeyID: e.KeyID, EventID: e.EventID,
				Deliveries: uint32(min(e.Deliveries, 1<<31)), Data: e.Event,
			})
			p.journal.end(slot)
			p.checkEmits(e, &res)
			obs.observe(&res)
			// The worker reuses Event and Timings on its next call;
			// Timings were observed just above.
			res.Event, res.Timings = nil, nil
			*out = append(*out, work{entry: e, result: res})
		}
		results <- out
	}
}

// checkEmits stamps every emit of an ok result as the sink will store it
// and turns the result into a reject when one cannot be: an emit that is
// not a JSON object, or whose event_id or timestamp is malformed, could
// never be committed, and retrying it would stall every entry behind it.
//
// An emit without event_id gets one derived from the entry (stream, entry
// id, position among the entry's emits), and one without timestamp gets
// the time the entry was appended: a retried entry emits the same event
// again, so an external sink's idempotency key recognises it.
func (p *Processor) checkEmits(e *streambus.Entry, r *host.Result) {
	if r.Verdict != abi.VerdictOK {
		return
	}
	at := entryTime(e.ID)
	for i := range r.Emits {
		ev := r.Emits[i].Event
		if !gjson.GetBytes(ev, integrity.EventIDMember).Exists() && json.Valid(ev) && gjson.ParseBytes(ev).IsObject() {
			if withID, err := sjson.SetBytes(ev, integrity.EventIDMember, derivedEventID(e.Stream, e.ID, i)); err == nil {
				ev = withID
			}
		}
		stamped, _, err := integrity.Stamp(ev, at)
		if err != nil {
			r.Verdict = abi.VerdictReject
			r.Plugin = r.Emits[i].Plugin
			r.Message = fmt.Sprintf("emitted an invalid event for sink %q: %v", r.Emits[i].Sink, err)
			r.Emits = nil
			return
		}
		r.Emits[i].Event = stamped
	}
}

// derivedEventID is the id of an entry's emit number n: a UUID (version 8)
// of the SHA-256 of the entry's stream and id and n, the same for every
// delivery of the entry.
func derivedEventID(stream, entryID string, n int) string {
	return integrity.DerivedEventID(stream+"\x00"+entryID, uint64(n))
}

// entryTime is the time in a stream entry id ("1700000000000-0"), or now
// when the id has none.
func entryTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	if n, err := strconv.ParseInt(ms, 10, 64); err == nil && n > 0 {
		return time.UnixMilli(n)
	}
	return time.Now()
}

// observers records results' per-plugin verdicts and latencies, with the
// metric children looked up once per plugin rather than once per event.
type observers map[string]*pluginObserver

type pluginObserver struct {
	latency  prometheus.Observer
	verdicts [4]prometheus.Counter // by abi.Verdict: ok, drop, retry, reject
}

func newObservers(m *Metrics, pipeline *host.Pipeline) observers {
	o := observers{}
	for _, pl := range pipeline.Plugins() {
		po := &pluginObserver{latency: m.PluginLatency.WithLabelValues(pl.Name())}
		for v := range po.verdicts {
			po.verdicts[v] = m.Verdicts.WithLabelValues(pl.Name(), abi.Verdict(v).String())
		}
		o[pl.Name()] = po
	}
	return o
}

// observe records a result's per-plugin verdicts and latencies. It is safe
// for concurrent use (the map is read only).
func (o observers) observe(r *host.Result) {
	for _, t := range r.Timings {
		po := o[t.Plugin]
		if po == nil {
			continue
		}
		po.latency.Observe(t.Duration.Seconds())
		v := abi.VerdictOK
		if t.Plugin == r.Plugin {
			v = r.Verdict
		}
		if v >= 0 && int(v) < len(po.verdicts) {
			po.verdicts[v].Inc()
		}
	}
}
