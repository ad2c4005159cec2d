package processor

import (
	"sync"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/streambus"
)

// heldSet is the set of entries this process holds: read from Redis (new,
// re-read or claimed) and not yet finished there — queued for a worker,
// running, or acknowledged only once their queued ack is sent. Redis
// still lists them pending; the reclaimer must not take them.
type heldSet struct {
	mu  sync.Mutex
	ids map[string]struct{}
	// claiming is set while a claim is on its way from Redis to take;
	// finished then collects the ids let go because they were acked or
	// dead-lettered meanwhile: the claim may return them (Redis ran the
	// claim first), and take must not run them again.
	claiming bool
	finished map[string]struct{}
}

// claim marks a claim on its way (on) or taken (off).
func (s *heldSet) claim(on bool) {
	s.mu.Lock()
	s.claiming = on
	if !on {
		s.finished = nil
	}
	s.mu.Unlock()
}

// letGo removes id; finished says it was acked or dead-lettered. Callers
// hold mu.
func (s *heldSet) letGo(id string, finished bool) {
	delete(s.ids, id)
	if finished && s.claiming {
		if s.finished == nil {
			s.finished = map[string]struct{}{}
		}
		s.finished[id] = struct{}{}
	}
}

// take adds entries to the set and returns those that were not held yet
// (in entries' memory): the reader and the reclaimer may both receive an
// entry (a claim racing a read), and only one of them runs it.
func (s *heldSet) take(entries []streambus.Entry) []streambus.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[string]struct{}, len(entries))
	}
	out := entries[:0]
	for _, e := range entries {
		if _, busy := s.ids[e.ID]; busy {
			continue
		}
		if _, done := s.finished[e.ID]; done {
			continue
		}
		s.ids[e.ID] = struct{}{}
		out = append(out, e)
	}
	return out
}

// list returns the ids held.
func (s *heldSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.ids))
	for id := range s.ids {
		ids = append(ids, id)
	}
	return ids
}

func (s *heldSet) remove(entries []streambus.Entry) {
	s.mu.Lock()
	for i := range entries {
		delete(s.ids, entries[i].ID)
	}
	s.mu.Unlock()
}

// removeWork releases a committed batch's entries; with queued, those
// whose ack waits in the ack queue (ok and drop verdicts) stay held.
func (s *heldSet) removeWork(batch []work, queued bool) {
	s.mu.Lock()
	for i := range batch {
		v := batch[i].result.Verdict
		if queued && acksOnly(v) {
			continue
		}
		s.letGo(batch[i].entry.ID, acksOnly(v) || v == abi.VerdictReject)
	}
	s.mu.Unlock()
}

// acksOnly says whether a verdict's commit is an ack (ok or drop).
func acksOnly(v abi.Verdict) bool { return v == abi.VerdictOK || v == abi.VerdictDrop }

// acked releases entries whose acks were sent.
func (s *heldSet) acked(ids []string) {
	s.mu.Lock()
	for _, id := range ids {
		s.letGo(id, true)
	}
	s.mu.Unlock()
}

// failureMemory remembers why an entry last failed, for its dead letter.
type failureMemory struct {
	mu sync.Mutex
	m  map[string]failure
}

type failure struct{ plugin, message string }

func (f *failureMemory) set(id string, v failure) {
	f.mu.Lock()
	if len(f.m) >= maxRemembered {
		for k := range f.m { // forget an arbitrary one: memory stays bounded
			delete(f.m, k)
			break
		}
	}
	f.m[id] = v
	f.mu.Unlock()
}

func (f *failureMemory) take(id string) (failure, bool) {
	f.mu.Lock()
	v, ok := f.m[id]
	delete(f.m, id)
	f.mu.Unlock()
	return v, ok
}

// forget drops the failures of the entries a plan finishes (acked or
// dead-lettered).
func (f *failureMemory) forget(plan *commitPlan) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) == 0 {
		return
	}
	for _, id := range plan.queue.ids {
		delete(f.m, id)
	}
	for i := range plan.items {
		delete(f.m, plan.items[i].ID)
	}
	for i := range plan.letters {
		delete(f.m, plan.letters[i].ID)
	}
}

// work is one entry on its way through a worker to the committer. entry
// points into the batch read from Redis, which lives until committed.
type work struct {
	entry  *streambus.Entry
	result host.Result
}

// chunk returns an empty result chunk with room for n entries.
func (p *Processor) chunk(n int) *[]work {
	if c, ok := p.chunks.Get().(*[]work); ok && cap(*c) >= n {
		*c = (*c)[:0]
		return c
	}
	c := make([]work, 0, max(n, maxChunk))
	return &c
}

// release gives a committed chunk back for reuse.
func (p *Processor) release(c *[]work) {
	clear(*c) // drop references to entries and emits
	p.chunks.Put(c)
}
