package processor

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/auditproc/auditproc/internal/streambus"
)

// Stats are the loop's totals since start, for summaries.
type Stats struct {
	Processed    atomic.Int64 // pipeline ended in ok and the entry was acked
	Dropped      atomic.Int64 // a plugin dropped the entry; acked
	Retried      atomic.Int64 // a plugin asked for a retry (or failed); left pending
	Rejected     atomic.Int64 // dead-lettered because a plugin rejected it
	Exhausted    atomic.Int64 // dead-lettered after max deliveries (failed or crashed_host)
	Tampered     atomic.Int64 // deliveries refused by verification (an entry counts each time)
	TamperedDLQ  atomic.Int64 // tampered entries dead-lettered after max deliveries
	Reclaimed    atomic.Int64 // entries claimed from idle consumers
	DeletedAlarm atomic.Int64 // pending entries found deleted or trimmed
	LateAcks     atomic.Int64 // acks that found the entry already acknowledged

	mu             sync.Mutex
	emitted        map[string]int64    // committed emits by sink name
	tamperedIDs    map[string]struct{} // distinct tampered entries, "<stream> <id>" (bounded)
	tamperedUnique int64
}

// Emitted returns the emits committed per sink name.
func (s *Stats) Emitted() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.emitted)
}

// TamperedEntries is how many distinct entries failed verification.
func (s *Stats) TamperedEntries() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tamperedUnique
}

// outcomes records what happened to entries, once, in both the Stats and
// the Metrics.
type outcomes struct {
	stats  *Stats
	m      *Metrics
	stream string // the processor's: entry ids repeat across a replica's shards
}

// read records a batch read or claimed: its entries, verified or tampered,
// and the entries found deleted while pending.
func (o outcomes) read(b streambus.Batch) {
	o.m.Read.Add(float64(len(b.Entries) + len(b.Tampered)))
	o.m.Verified.Add(float64(len(b.Entries)))
	for _, t := range b.Tampered {
		o.m.Tampered.WithLabelValues(t.Reason).Inc()
		o.tampered(t.ID)
	}
	if n := len(b.Deleted); n > 0 {
		o.stats.DeletedAlarm.Add(int64(n))
		o.m.DeletedPending.Add(float64(n))
	}
}

func (o outcomes) tampered(id string) {
	s := o.stats
	s.Tampered.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tamperedIDs == nil {
		s.tamperedIDs = map[string]struct{}{}
	}
	key := o.stream + " " + id
	if _, seen := s.tamperedIDs[key]; seen {
		return
	}
	s.tamperedUnique++
	if len(s.tamperedIDs) < maxRemembered {
		s.tamperedIDs[key] = struct{}{}
	}
}

// reclaimed records n entries claimed from idle consumers.
func (o outcomes) reclaimed(n int) {
	if n > 0 {
		o.stats.Reclaimed.Add(int64(n))
		o.m.Reclaimed.Add(float64(n))
	}
}

// acked records an ack of asked entries of which acked were still pending,
// ok and dropped of them by verdict.
func (o outcomes) acked(asked int, acked, ok, dropped int64) {
	o.m.Acked.Add(float64(acked))
	if late := int64(asked) - acked; late > 0 {
		// Finished elsewhere meanwhile (claimed by another replica), or
		// a retried ack whose first attempt went through.
		o.stats.LateAcks.Add(late)
		o.m.LateAcks.Add(float64(late))
	}
	o.stats.Processed.Add(ok)
	o.stats.Dropped.Add(dropped)
}

// deadLettered records one entry moved to the dead-letter stream.
func (o outcomes) deadLettered(kind streambus.ReasonKind) {
	o.m.DeadLettered.WithLabelValues(string(kind)).Inc()
	switch kind {
	case streambus.ReasonRejected:
		o.stats.Rejected.Add(1)
	case streambus.ReasonMaxDeliveries, streambus.ReasonCrashedHost:
		o.stats.Exhausted.Add(1)
	default: // a verification reason
		o.stats.TamperedDLQ.Add(1)
	}
}

// emitted records n emits committed to sink.
func (o outcomes) emitted(sink string, n int) {
	s := o.stats
	s.mu.Lock()
	if s.emitted == nil {
		s.emitted = map[string]int64{}
	}
	s.emitted[sink] += int64(n)
	s.mu.Unlock()
	o.m.Emitted.WithLabelValues(sink).Add(float64(n))
}

// retried records an entry left pending for another attempt.
func (o outcomes) retried() { o.stats.Retried.Add(1) }

// groupRecreated records the consumer group found deleted and recreated.
func (o outcomes) groupRecreated() { o.m.GroupRecreated.Inc() }
