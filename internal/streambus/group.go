package streambus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// XGroupCreate creates group on stream, creating the stream when it is
// missing (MKSTREAM). start is the id the group starts after: "$" (the
// default) for entries added from now on, "0" for the whole stream. It
// reports false, and no error, when the group already exists.
func (b *Bus) XGroupCreate(ctx context.Context, stream, group, start string) (bool, error) {
	if stream == "" || group == "" {
		return false, fmt.Errorf("%w: xgroup create needs stream and group", ErrInvalidArgs)
	}
	if start == "" {
		start = "$"
	}
	err := b.rdb.XGroupCreateMkStream(ctx, stream, group, start).Err()
	if redis.HasErrorPrefix(err, "BUSYGROUP") {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create group %q on stream %q: %w", group, stream, err)
	}
	b.log.LogAttrs(ctx, slog.LevelInfo, "consumer_group_created",
		slog.String("stream", stream), slog.String("group", group), slog.String("start", start))
	return true, nil
}

// XAck acknowledges ids in group and returns how many were pending.
func (b *Bus) XAck(ctx context.Context, stream, group string, ids ...string) (int64, error) {
	if stream == "" || group == "" {
		return 0, fmt.Errorf("%w: xack needs stream and group", ErrInvalidArgs)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := b.rdb.XAck(ctx, stream, group, ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("xack %d ids on stream %q group %q: %w", len(ids), stream, group, err)
	}
	b.logAcked(ctx, stream, group, len(ids), n)
	return n, nil
}

func (b *Bus) logAcked(ctx context.Context, stream, group string, asked int, acked int64) {
	b.log.LogAttrs(ctx, slog.LevelDebug, "messages_acknowledged",
		slog.String("stream", stream), slog.String("group", group),
		slog.Int("ids", asked), slog.Int64("count", acked))
}

// PendingInfo summarises a group's pending entries (XPENDING).
type PendingInfo struct {
	// Count is the number of entries delivered and not acknowledged.
	Count int64
	// Lowest and Highest are the smallest and largest pending ids, "" when
	// Count is 0.
	Lowest, Highest string
	// Consumers maps each consumer holding pending entries to its count.
	Consumers map[string]int64
}

// XPending returns the summary of group's pending entries.
func (b *Bus) XPending(ctx context.Context, stream, group string) (PendingInfo, error) {
	if stream == "" || group == "" {
		return PendingInfo{}, fmt.Errorf("%w: xpending needs stream and group", ErrInvalidArgs)
	}
	p, err := b.rdb.XPending(ctx, stream, group).Result()
	if err != nil {
		return PendingInfo{}, fmt.Errorf("xpending on stream %q group %q: %w", stream, group, err)
	}
	info := PendingInfo{Count: p.Count, Consumers: map[string]int64{}}
	if p.Count > 0 {
		info.Lowest, info.Highest = p.Lower, p.Higher
	}
	for c, n := range p.Consumers {
		info.Consumers[c] = n
	}
	return info, nil
}

// PendingArgs select pending entries for XPendingEntries.
type PendingArgs struct {
	Stream string
	Group  string
	// Consumer, when set, keeps only that consumer's entries.
	Consumer string
	// MinIdle, when positive, keeps only entries idle at least that long.
	MinIdle time.Duration
	// Start and End bound the ids, inclusive ("(" before an id excludes it).
	// Defaults: "-" and "+".
	Start, End string
	// Count caps the entries returned. Default: Config.Count.
	Count int64
}

// PendingEntry is one pending entry (extended XPENDING).
type PendingEntry struct {
	ID       string
	Consumer string
	// Idle is the time since the entry was last delivered.
	Idle time.Duration
	// Deliveries is how many times it was delivered.
	Deliveries int64
}

// XPendingEntries lists pending entries with their consumer, idle time and
// delivery count, in id order.
func (b *Bus) XPendingEntries(ctx context.Context, a PendingArgs) ([]PendingEntry, error) {
	if a.Stream == "" || a.Group == "" {
		return nil, fmt.Errorf("%w: xpending needs stream and group", ErrInvalidArgs)
	}
	if a.Start == "" {
		a.Start = "-"
	}
	if a.End == "" {
		a.End = "+"
	}
	ps, err := b.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: a.Stream, Group: a.Group, Consumer: a.Consumer, Idle: max(a.MinIdle, 0),
		Start: a.Start, End: a.End, Count: b.count(a.Count),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("xpending entries on stream %q group %q: %w", a.Stream, a.Group, err)
	}
	out := make([]PendingEntry, len(ps))
	for i, p := range ps {
		out[i] = PendingEntry{ID: p.ID, Consumer: p.Consumer, Idle: p.Idle, Deliveries: p.RetryCount}
	}
	return out, nil
}
