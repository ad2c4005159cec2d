package host

import (
	"context"
	"errors"
	"time"

	"github.com/auditproc/auditproc/abi"
)

// Event is one verified audit event, as plugins receive it (see the input
// record in abi/README.md).
type Event struct {
	EntryID    string // Redis stream entry id
	Stream     string // stream the entry was read from
	KeyID      string // id of the key that signed it
	EventID    string // the event's own unique id
	Deliveries uint32 // 1 on first delivery
	Data       []byte // the event: a JSON object's text
}

// Emit is a derived event a plugin buffered for a sink.
type Emit struct {
	Plugin string // the plugin that emitted it
	Sink   string // a sink granted to that plugin
	Event  []byte // a JSON object's text
}

// Timing is how long one plugin took on one event.
type Timing struct {
	Plugin   string
	Duration time.Duration
}

// Result is the pipeline's verdict on one event.
//
// Event and Timings are owned by the Worker and valid until its next
// Process call; copy them to keep them longer.
type Result struct {
	// Verdict is ok when every plugin returned ok; otherwise the first
	// non-ok verdict.
	Verdict abi.Verdict
	// Plugin is the plugin that decided a non-ok verdict ("" for ok).
	Plugin string
	// Message is that plugin's set_message text, or the host's reason when
	// the host imposed the verdict. For ok it is the last message any plugin
	// set.
	Message string
	// Err is set when the host imposed the verdict (trap, deadline,
	// proc_exit, invalid verdict, guest memory, event too large, closed):
	// a *PluginError wrapping one of the cause sentinels.
	Err error
	// Event is the event as the last plugin that ran left it.
	Event []byte
	// Emits are the buffered emits of every plugin, in order; only for ok.
	Emits []Emit
	// Timings has one entry per plugin that ran, in order.
	Timings []Timing
}

// Pipeline is an ordered list of plugins.
type Pipeline struct {
	plugins []*Plugin
}

// NewPipeline returns a pipeline running plugins in the order given.
func NewPipeline(plugins ...*Plugin) *Pipeline {
	return &Pipeline{plugins: append([]*Plugin(nil), plugins...)}
}

// Plugins returns the pipeline's plugins in order.
func (p *Pipeline) Plugins() []*Plugin { return append([]*Plugin(nil), p.plugins...) }

// Close closes every plugin of the pipeline.
func (p *Pipeline) Close(ctx context.Context) error {
	var errs []error
	for _, pl := range p.plugins {
		errs = append(errs, pl.Close(ctx))
	}
	return errors.Join(errs...)
}

// Worker runs the pipeline on one goroutine: it holds one instance per
// plugin. It is not safe for concurrent use; make one per goroutine.
type Worker struct {
	pipeline *Pipeline
	insts    []*instance // nil where the next event needs a fresh instance
	timings  []Timing
}

// NewWorker makes a worker and its instances.
func (p *Pipeline) NewWorker(ctx context.Context) (*Worker, error) {
	w := &Worker{pipeline: p, insts: make([]*instance, len(p.plugins)), timings: make([]Timing, 0, len(p.plugins))}
	for i, pl := range p.plugins {
		inst, err := pl.getInstance(ctx)
		if err != nil {
			w.Release()
			return nil, err
		}
		w.insts[i] = inst
	}
	return w, nil
}

// Release gives the worker's healthy instances back to their plugins for
// the next worker; the worker is not used after it.
func (w *Worker) Release() {
	for i, inst := range w.insts {
		if inst != nil {
			w.pipeline.plugins[i].putIdle(inst)
			w.insts[i] = nil
		}
	}
}

// Process runs ev through the pipeline. A plugin whose instance fails is
// given a fresh instance on the next event. ctx's deadline, when sooner than
// a plugin's, bounds its call; a cancelled ctx is noticed between plugins
// (the running call is bounded by its deadline) and gives retry.
func (w *Worker) Process(ctx context.Context, ev Event) Result {
	w.timings = w.timings[:0]
	res := Result{Verdict: abi.VerdictOK, Event: ev.Data}
	var emits []Emit
	start := time.Now()
	for i, pl := range w.pipeline.plugins {
		if err := ctx.Err(); err != nil {
			return hostVerdict(res, w.timings, pl, abi.VerdictRetry, err)
		}
		inst := w.insts[i]
		if inst == nil {
			var err error
			if inst, err = pl.newInstance(ctx); err != nil {
				return hostVerdict(res, w.timings, pl, abi.VerdictRetry, err)
			}
			w.insts[i] = inst
			start = time.Now()
		}
		out := inst.process(ctx, &ev, res.Event, start)
		end := out.end
		if end.IsZero() {
			end = time.Now()
		}
		w.timings = append(w.timings, Timing{Plugin: pl.spec.Name, Duration: end.Sub(start)})
		start = end
		if out.discard {
			inst.close(causeOf(out.err))
			w.insts[i] = nil
		} else if cause, recycle := inst.recycleCause(); recycle {
			inst.close(cause)
			w.insts[i] = nil
		}
		if out.err != nil {
			if out.discard {
				pl.logger.WarnContext(ctx, "plugin_instance_discarded", "entry_id", ev.EntryID, "cause", causeOf(out.err).String(), "error", out.err)
			}
			return hostVerdict(res, w.timings, pl, out.verdict, out.err)
		}
		res.Event = out.event
		if out.verdict != abi.VerdictOK {
			res.Verdict = out.verdict
			res.Plugin = pl.spec.Name
			res.Message = string(inst.message)
			res.Timings = w.timings
			return res
		}
		emits = append(emits, inst.emits...)
		if len(inst.message) > 0 {
			res.Message = string(inst.message)
		}
	}
	if len(emits) > 0 {
		res.Emits = emits
	}
	res.Timings = w.timings
	return res
}

func hostVerdict(res Result, timings []Timing, pl *Plugin, v abi.Verdict, err error) Result {
	var perr *PluginError
	if !errors.As(err, &perr) {
		err = &PluginError{Plugin: pl.spec.Name, Err: err}
	}
	res.Verdict = v
	res.Plugin = pl.spec.Name
	res.Message = err.Error()
	res.Err = err
	res.Timings = timings
	return res
}
