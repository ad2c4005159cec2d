package processor

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/auditproc/auditproc/host"
)

// generation is one loaded pipeline with its metric observers. Each worker
// runs on one generation at a time and holds a reference to it; the
// processor holds one for the current generation. A replaced generation's
// pipeline is closed when its last reference goes, that is when every
// worker has finished the chunk it started on it.
type generation struct {
	pipeline *host.Pipeline
	obs      observers
	refs     atomic.Int64
	closed   chan struct{} // closed once the pipeline is closed
	log      *slog.Logger
}

func newGeneration(m *Metrics, pipeline *host.Pipeline, log *slog.Logger) *generation {
	g := &generation{pipeline: pipeline, obs: newObservers(m, pipeline), closed: make(chan struct{}), log: log}
	g.refs.Store(1) // the processor's
	return g
}

// release drops one reference; the last one closes the pipeline.
func (g *generation) release() {
	if g.refs.Add(-1) == 0 {
		if err := g.pipeline.Close(context.Background()); err != nil {
			g.log.Warn("pipeline_close_failed", slog.String("error", err.Error()))
		}
		close(g.closed)
	}
}

// generations is the processor's current generation; swaps and new
// references are ordered by mu so a generation is never closed while a
// worker takes it up.
type generations struct {
	mu  sync.Mutex
	cur atomic.Pointer[generation]
}

// acquire returns the current generation with a reference for the caller.
func (gs *generations) acquire() *generation {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.cur.Load()
	g.refs.Add(1)
	return g
}

// Reload swaps in a new pipeline, completely loaded by the caller, between
// chunks: each worker finishes the chunk it is running on the pipeline that
// started it and takes the new one for its next chunk. Entries are neither
// lost nor processed twice: reading, acks and commits do not depend on the
// pipeline. The replaced pipeline is closed by the processor once no worker
// uses it any more (the returned channel is closed then); the processor's
// last pipeline is the caller's to close after Run (see Pipeline).
func (p *Processor) Reload(pipeline *host.Pipeline) <-chan struct{} {
	p.metrics.WatchPlugins(pipeline.Plugins())
	next := newGeneration(p.metrics, pipeline, p.log)
	p.gens.mu.Lock()
	old := p.gens.cur.Swap(next)
	p.gens.mu.Unlock()
	old.release()
	return old.closed
}

// Pipeline returns the pipeline the processor runs now: the one given to New
// or the last Reload's.
func (p *Processor) Pipeline() *host.Pipeline { return p.gens.cur.Load().pipeline }
