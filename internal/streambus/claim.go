package streambus

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// AutoClaimArgs are the arguments of XAutoClaim.
type AutoClaimArgs struct {
	Stream   string
	Group    string
	Consumer string
	// MinIdle: only entries idle at least this long are claimed.
	MinIdle time.Duration
	// Start is the cursor: "0-0" (the default) to begin a scan, then the
	// previous Batch.Cursor.
	Start string
	// Count caps the entries scanned. Default: Config.Count.
	Count int64
}

// XAutoClaim scans the pending list from a.Start and moves entries idle at
// least a.MinIdle to a.Consumer. It returns the verified entries, the
// tampered ones (Deliveries filled, for the max-deliveries rule) and the ids
// of entries deleted or trimmed while pending, which Redis removed from the
// pending list. Batch.Cursor is the next start, "0-0" when the scan is done.
func (b *Bus) XAutoClaim(ctx context.Context, a AutoClaimArgs) (Batch, error) {
	if a.Stream == "" || a.Group == "" || a.Consumer == "" {
		return Batch{}, fmt.Errorf("%w: xautoclaim needs stream, group and consumer", ErrInvalidArgs)
	}
	if a.Start == "" {
		a.Start = "0-0"
	}
	sc := b.getScratch()
	defer b.putScratch(sc)
	raw, err := b.raw(ctx, "xautoclaim", a.Stream, a.Group, a.Consumer, max(a.MinIdle, 0).Milliseconds(),
		a.Start, "count", b.count(a.Count))
	var (
		next    string
		entries []rawEntry
		deleted []string
	)
	if err == nil {
		next, entries, deleted, err = parseAutoClaimReply(raw, sc)
	}
	if err != nil {
		return Batch{}, fmt.Errorf("xautoclaim on stream %q group %q from %q: %w", a.Stream, a.Group, a.Start, err)
	}
	return b.claimed(ctx, "xautoclaim", a.Stream, a.Group, a.Consumer, entries, deleted, next, sc)
}

func (b *Bus) claimed(ctx context.Context, op, stream, group, consumer string, entries []rawEntry, deleted []string, cursor string, sc *scratch) (Batch, error) {
	batch := Batch{}
	b.verify(stream, entries, 0, true, &batch, sc)
	batch.Cursor, batch.Deleted = cursor, append(batch.Deleted, deleted...)
	if err := b.fillDeliveries(ctx, stream, group, consumer, &batch); err != nil {
		return Batch{}, err
	}
	b.reportTampered(ctx, op, group, consumer, batch.Tampered)
	if batch.Len() > 0 {
		b.log.LogAttrs(ctx, slog.LevelInfo, "audit_pending_claimed",
			slog.String("stream", stream), slog.String("group", group), slog.String("consumer", consumer),
			slog.String("op", op), slog.Int("count", len(batch.Entries)),
			slog.Int("tampered", len(batch.Tampered)), slog.Int("deleted", len(batch.Deleted)))
	}
	return batch, nil
}

// fillDeliveries sets Deliveries of the batch's entries, all owned by
// consumer, from XPENDING: one range call over the batch's ids (more only if
// the consumer holds other pending entries in between).
func (b *Bus) fillDeliveries(ctx context.Context, stream, group, consumer string, batch *Batch) error {
	n := len(batch.Entries) + len(batch.Tampered)
	if n == 0 {
		return nil
	}
	want := make(map[string]int64, n)
	var lo, hi string
	for _, id := range batchIDs(batch) {
		want[id] = 0
		if lo == "" || CompareIDs(id, lo) < 0 {
			lo = id
		}
		if hi == "" || CompareIDs(id, hi) > 0 {
			hi = id
		}
	}
	for start, found := lo, 0; found < len(want); {
		ps, err := b.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: stream, Group: group, Consumer: consumer, Start: start, End: hi, Count: int64(n),
		}).Result()
		if err != nil {
			return fmt.Errorf("xpending delivery counts on stream %q group %q: %w", stream, group, err)
		}
		for _, p := range ps {
			if _, ok := want[p.ID]; ok {
				want[p.ID] = p.RetryCount
				found++
			}
		}
		if len(ps) < n {
			break
		}
		start = "(" + ps[len(ps)-1].ID
	}
	// An id no longer pending for consumer was claimed by another consumer
	// (or acknowledged) between the claim and XPENDING: it is not this
	// consumer's to run, so it leaves the batch.
	entries := batch.Entries[:0]
	for _, e := range batch.Entries {
		if d := want[e.ID]; d > 0 {
			e.Deliveries = d
			entries = append(entries, e)
		}
	}
	batch.Entries = entries
	if err := b.fillAttempts(ctx, stream, batch.Entries); err != nil {
		return err
	}
	tampered := batch.Tampered[:0]
	for _, t := range batch.Tampered {
		if d := want[t.ID]; d > 0 {
			t.Deliveries = d
			tampered = append(tampered, t)
		}
	}
	batch.Tampered = tampered
	return nil
}

func batchIDs(batch *Batch) []string {
	ids := make([]string, 0, len(batch.Entries)+len(batch.Tampered))
	for _, e := range batch.Entries {
		ids = append(ids, e.ID)
	}
	for _, t := range batch.Tampered {
		ids = append(ids, t.ID)
	}
	return ids
}

// CompareIDs orders two stream ids "ms-seq" numerically.
func CompareIDs(a, b string) int {
	ams, aseq := splitID(a)
	bms, bseq := splitID(b)
	if c := cmp.Compare(ams, bms); c != 0 {
		return c
	}
	return cmp.Compare(aseq, bseq)
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

// fillAttempts sets Attempts of entries from the stream's attempts hash.
func (b *Bus) fillAttempts(ctx context.Context, stream string, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	counts, err := b.rdb.HMGet(ctx, AttemptsKey(stream), ids...).Result()
	if err != nil {
		return fmt.Errorf("attempt counts on stream %q: %w", stream, err)
	}
	for i, c := range counts {
		if s, ok := c.(string); ok {
			entries[i].Attempts, _ = strconv.ParseInt(s, 10, 64)
		}
	}
	return nil
}
