package streambus

import (
	"context"
	"fmt"
	"log/slog"

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
	var n int64
	var err error
	if b.waits() {
		// Through the commit script, which writes on every run: a plain
		// XACK run again writes nothing, and its WAIT would not cover the
		// first run's.
		var out commitOutcome
		out, err = b.runCommit(ctx, stream, group, plainAcks(ids))
		n = out.acked
	} else {
		n, err = b.rdb.XAck(ctx, stream, group, ids...).Result()
	}
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

// GroupInfo is a consumer group's state (XINFO GROUPS).
type GroupInfo struct {
	// Pending is the number of entries delivered and not acknowledged.
	Pending int64
	// Lag is the number of entries in the stream not yet delivered to the
	// group.
	Lag int64
}

// XInfoGroup returns the state of group on stream. A missing stream or
// group is an error (Redis's "no such key" or ErrNoGroup).
func (b *Bus) XInfoGroup(ctx context.Context, stream, group string) (GroupInfo, error) {
	if stream == "" || group == "" {
		return GroupInfo{}, fmt.Errorf("%w: xinfo groups needs stream and group", ErrInvalidArgs)
	}
	groups, err := b.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return GroupInfo{}, fmt.Errorf("xinfo groups on stream %q: %w", stream, err)
	}
	for _, g := range groups {
		if g.Name == group {
			return GroupInfo{Pending: g.Pending, Lag: g.Lag}, nil
		}
	}
	return GroupInfo{}, fmt.Errorf("xinfo groups on stream %q: %w", stream, ErrNoGroup)
}
