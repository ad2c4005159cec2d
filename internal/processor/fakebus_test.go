package processor

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/auditproc/auditproc/internal/streambus"
)

// fakeBus is an in-memory stream with one consumer group, for tests of the
// processor's decisions without Redis (as Watermill's router tests use its
// in-memory pub/sub). It keeps Redis's rules the decisions rest on: a
// delivery count per pending entry raised by every read of history and
// every claim, acks and dead letters that only act on pending entries.
// The Redis-backed tests check the real thing.
type fakeBus struct {
	mu       sync.Mutex
	entries  []streambus.Entry
	tampered map[string]streambus.Tampered // by id: entries that fail verification
	next     int                           // index of the first entry never delivered
	pending  map[string]*fakePending
	attempts map[string]int64
	touched  int
	letters  []streambus.Letter
	commits  [][]streambus.Item
	acked    []string
	group    bool
}

type fakePending struct {
	consumer   string
	deliveries int64
	delivered  time.Time
}

func newFakeBus(stream string, n int) *fakeBus {
	b := &fakeBus{pending: map[string]*fakePending{}, tampered: map[string]streambus.Tampered{}, attempts: map[string]int64{}}
	for i := range n {
		b.entries = append(b.entries, streambus.Entry{
			ID: fmt.Sprintf("%d-0", i+1), Stream: stream, KeyID: "k", EventID: fmt.Sprint("ev-", i+1),
			Event: fmt.Appendf(nil, `{"event_id":"ev-%d","actor":"a"}`, i+1), Sig: "00",
		})
	}
	return b
}

// tamper makes entry i fail verification.
func (b *fakeBus) tamper(i int) {
	e := b.entries[i]
	b.tampered[e.ID] = streambus.Tampered{ID: e.ID, Stream: e.Stream, Reason: "signature_mismatch", Fields: []string{"kid", "k"}}
}

// deliver makes a batch of entries as a read returns them, the pending
// list updated. Callers hold mu.
func (b *fakeBus) deliver(es []streambus.Entry, consumer string) streambus.Batch {
	var batch streambus.Batch
	for _, e := range es {
		p := b.pending[e.ID]
		if p == nil {
			p = &fakePending{}
			b.pending[e.ID] = p
		}
		p.consumer, p.delivered = consumer, time.Now()
		p.deliveries++
		e.Deliveries, e.Attempts = p.deliveries, b.attempts[e.ID]
		batch.Cursor = e.ID
		if t, bad := b.tampered[e.ID]; bad {
			t.Deliveries = p.deliveries
			batch.Tampered = append(batch.Tampered, t)
			continue
		}
		batch.Entries = append(batch.Entries, e)
	}
	return batch
}

func (b *fakeBus) XGroupCreate(context.Context, string, string, string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	created := !b.group
	b.group = true
	return created, nil
}

func (b *fakeBus) XReadGroup(ctx context.Context, a streambus.GroupReadArgs) (streambus.Batch, error) {
	b.mu.Lock()
	acked := b.ack(a.Ack)
	var batch streambus.Batch
	if a.ID == ">" {
		hi := min(len(b.entries), b.next+int(a.Count))
		batch = b.deliver(b.entries[b.next:hi], a.Consumer)
		b.next = hi
	} else {
		var mine []streambus.Entry
		for _, e := range b.entries {
			if p := b.pending[e.ID]; p != nil && p.consumer == a.Consumer && streambus.CompareIDs(e.ID, a.ID) > 0 && len(mine) < int(a.Count) {
				mine = append(mine, e)
			}
		}
		batch = b.deliver(mine, a.Consumer)
	}
	b.mu.Unlock()
	batch.Acked, batch.AcksSent = acked, len(a.Ack) > 0
	if batch.Len() == 0 && a.ID == ">" && a.Block >= 0 {
		select { // a short wait stands for the blocking read
		case <-ctx.Done():
			return batch, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return batch, nil
}

func (b *fakeBus) XAutoClaim(_ context.Context, a streambus.AutoClaimArgs) (streambus.Batch, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var idle []streambus.Entry
	for _, e := range b.entries {
		if p := b.pending[e.ID]; p != nil && time.Since(p.delivered) >= a.MinIdle {
			idle = append(idle, e)
		}
	}
	batch := b.deliver(idle, a.Consumer)
	batch.Cursor = "0-0"
	return batch, nil
}

// ack removes ids from the pending list. Callers hold mu.
func (b *fakeBus) ack(ids []string) int64 {
	var n int64
	for _, id := range ids {
		if b.pending[id] != nil {
			delete(b.pending, id)
			delete(b.attempts, id)
			b.acked = append(b.acked, id)
			n++
		}
	}
	return n
}

func (b *fakeBus) XAck(_ context.Context, _, _ string, ids ...string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ack(ids), nil
}

func (b *fakeBus) Commit(_ context.Context, _, _ string, items ...streambus.Item) (streambus.CommitResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commits = append(b.commits, slices.Clone(items))
	res := streambus.CommitResult{IDs: make([][]string, len(items))}
	for i, it := range items {
		if b.ack([]string{it.ID}) == 0 {
			continue
		}
		res.Acked++
		for j := range it.Adds {
			res.IDs[i] = append(res.IDs[i], fmt.Sprintf("%s-add-%d", it.ID, j))
		}
	}
	return res, nil
}

func (b *fakeBus) DeadLetter(_ context.Context, _, _, _ string, letters ...streambus.Letter) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, len(letters))
	for i, l := range letters {
		if b.ack([]string{l.ID}) == 0 {
			continue
		}
		b.letters = append(b.letters, l)
		ids[i] = "dead-" + l.ID
	}
	return ids, nil
}

func (b *fakeBus) XPending(context.Context, string, string) (streambus.PendingInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return streambus.PendingInfo{Count: int64(len(b.pending))}, nil
}

func (b *fakeBus) XInfoGroup(context.Context, string, string) (streambus.GroupInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return streambus.GroupInfo{Pending: int64(len(b.pending)), Lag: int64(len(b.entries) - b.next)}, nil
}

func (b *fakeBus) Charge(_ context.Context, _, _ string, ids ...string) ([]streambus.Charged, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]streambus.Charged, len(ids))
	for i, id := range ids {
		if p := b.pending[id]; p != nil {
			b.attempts[id]++
			out[i] = streambus.Charged{Attempts: b.attempts[id], Deliveries: p.deliveries}
		}
	}
	return out, nil
}

func (b *fakeBus) Touch(_ context.Context, _, _, consumer string, ids ...string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, id := range ids {
		if p := b.pending[id]; p != nil && p.consumer == consumer {
			p.delivered = time.Now()
			n++
		}
	}
	b.touched++
	return n, nil
}

func (b *fakeBus) XRange(_ context.Context, _, start, _ string, _ int64) ([]streambus.RawEntry, error) {
	for _, e := range b.entries {
		if e.ID == start {
			return []streambus.RawEntry{{ID: e.ID, Fields: []string{"kid", e.KeyID, "event", string(e.Event)}}}, nil
		}
	}
	return nil, nil
}

// pendingIDs lists the pending entries in id order.
func (b *fakeBus) pendingIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, e := range b.entries {
		if b.pending[e.ID] != nil {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// Seen finds every entry fresh: the fake streams hold no chained entries.
func (b *fakeBus) Seen(_ context.Context, _, _ string, marks []streambus.Mark) ([]streambus.SeenVerdict, error) {
	return make([]streambus.SeenVerdict, len(marks)), nil
}

func (b *fakeBus) SettleGap(context.Context, string, string, string, uint64, uint64) (uint64, streambus.SourceMark, error) {
	return 0, streambus.SourceMark{}, nil
}
