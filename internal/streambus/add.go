package streambus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// XAdd stamps event (integrity.Stamp adds event_id and timestamp when they
// are missing), signs it for stream and appends it. maxLen > 0 trims the
// stream to about maxLen entries (MAXLEN ~, the cheap approximate form);
// maxLen == 0 never trims, the default for an audit stream. The returned
// Entry carries the new entry id and the exact event bytes written.
func (b *Bus) XAdd(ctx context.Context, stream string, event []byte, maxLen int64) (Entry, error) {
	if stream == "" {
		return Entry{}, fmt.Errorf("%w: empty stream name", ErrInvalidArgs)
	}
	if maxLen < 0 {
		return Entry{}, fmt.Errorf("%w: maxlen %d is negative", ErrInvalidArgs, maxLen)
	}
	env, err := b.seal(stream, event)
	if err != nil {
		return Entry{}, err
	}
	id, err := b.rdb.XAdd(ctx, addArgs(stream, env, maxLen)).Result()
	if err != nil {
		return Entry{}, fmt.Errorf("xadd to stream %q: %w", stream, err)
	}
	b.log.LogAttrs(ctx, slog.LevelDebug, "stream_message_added",
		slog.String("stream", stream), slog.String("entry_id", id),
		slog.String("event_id", env.EventID), slog.String("kid", env.KeyID))
	return Entry{ID: id, Stream: stream, KeyID: env.KeyID, EventID: env.EventID, Event: env.Event, Sig: env.Sig}, nil
}

// seal stamps and signs event for stream.
func (b *Bus) seal(stream string, event []byte) (integrity.Envelope, error) {
	stamped, _, err := integrity.Stamp(event, time.Now())
	if err != nil {
		return integrity.Envelope{}, fmt.Errorf("stamp event for stream %q: %w", stream, err)
	}
	return b.sign(stream, stamped)
}

// sign signs a stamped event for stream.
func (b *Bus) sign(stream string, stamped []byte) (integrity.Envelope, error) {
	env, err := b.keys.Sign(stream, stamped)
	if err != nil {
		return integrity.Envelope{}, fmt.Errorf("sign event for stream %q: %w", stream, err)
	}
	return env, nil
}

func addArgs(stream string, env integrity.Envelope, maxLen int64) *redis.XAddArgs {
	a := &redis.XAddArgs{Stream: stream, Values: env.Values()}
	if maxLen > 0 {
		a.MaxLen = maxLen
		a.Approx = true
	}
	return a
}
