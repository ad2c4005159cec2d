package streambus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	var id string
	if b.waits() {
		var cmd *redis.StringCmd
		werr := b.replicated(ctx, stream, func(p redis.Pipeliner) { cmd = p.XAdd(ctx, addArgs(stream, env, maxLen)) })
		if cmd == nil {
			err = werr // not sent
		} else if id, err = cmd.Result(); err == nil {
			err = werr
		}
	} else {
		id, err = b.rdb.XAdd(ctx, addArgs(stream, env, maxLen)).Result()
	}
	if err != nil {
		// Not replicated, the entry is on the master and may be lost on a
		// failover: as with an unknown outcome, the chain does not go on
		// past it.
		b.chainBroken(ctx, stream, err)
		return Entry{}, fmt.Errorf("xadd to stream %q: %w", stream, err)
	}
	if b.chain != nil {
		b.Checkpoint(ctx) // by count; errors are logged there
	}
	b.log.LogAttrs(ctx, slog.LevelDebug, "stream_message_added",
		slog.String("stream", stream), slog.String("entry_id", id),
		slog.String("event_id", env.EventID), slog.String("kid", env.KeyID))
	return Entry{ID: id, Stream: stream, KeyID: env.KeyID, EventID: env.EventID, Event: env.Event, Sig: env.Sig, Link: env.Link}, nil
}

// seal stamps and signs event for stream.
func (b *Bus) seal(stream string, event []byte) (integrity.Envelope, error) {
	stamped, _, err := integrity.Stamp(event, time.Now())
	if err != nil {
		return integrity.Envelope{}, fmt.Errorf("stamp event for stream %q: %w", stream, err)
	}
	return b.sign(stream, stamped)
}

// sign signs a stamped event for stream: as the next entry of the Bus's
// chain when it has one (envelope version 2), else version 1. It is the
// one signing step of every append of the Bus.
func (b *Bus) sign(stream string, stamped []byte) (integrity.Envelope, error) {
	var env integrity.Envelope
	var err error
	if b.chain != nil {
		env, err = b.chain.Sign(stream, stamped, time.Now())
	} else {
		env, err = b.keys.Sign(stream, stamped)
	}
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

// Seal stamps (integrity.Stamp) and signs event for stream exactly as XAdd
// does, without writing it: for producers that write the returned
// envelope's Values themselves (pipelined, spooled). A chained Bus numbers
// the envelope: the caller must write every envelope Seal returns (an
// envelope never written is a gap in the chain) and call ChainBroken when
// a write's outcome is unknown, and Checkpoint after writes.
func (b *Bus) Seal(stream string, event []byte) (integrity.Envelope, error) {
	if stream == "" {
		return integrity.Envelope{}, fmt.Errorf("%w: empty stream name", ErrInvalidArgs)
	}
	return b.seal(stream, event)
}

// Checkpoint appends the checkpoints the chain has due (every
// Config.Checkpoint.CheckpointEvery entries, or after its interval, also
// when idle). A Bus without a chain does nothing. Failures are logged and
// returned; the chain then starts a new session.
func (b *Bus) Checkpoint(ctx context.Context) error {
	if b.chain == nil {
		return nil
	}
	b.writes.Lock()
	defer b.writes.Unlock()
	return b.checkpoint(ctx)
}

// checkpoint is Checkpoint with b.writes held.
func (b *Bus) checkpoint(ctx context.Context) error {
	if b.chain == nil {
		return nil
	}
	due, err := b.chain.Due(time.Now())
	if err == nil {
		err = b.writeCheckpoints(ctx, due)
	}
	return err
}

// RunCheckpoints appends due checkpoints until ctx ends, looking every
// tenth of the checkpoint interval (at most every second), so that a source
// that writes nothing still proves every interval that it is alive and
// that nothing after its last entry was deleted. A Bus without a chain
// returns at once.
func (b *Bus) RunCheckpoints(ctx context.Context) {
	if b.chain == nil {
		return
	}
	interval := b.cfg.Checkpoint.CheckpointInterval
	if interval <= 0 {
		interval = integrity.DefaultCheckpointInterval
	}
	t := time.NewTicker(min(max(interval/10, time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = b.Checkpoint(ctx)
		}
	}
}

// CloseChain appends the closing checkpoint of every stream the Bus wrote
// to; afterwards the Bus appends nothing. A reader then knows the source
// stopped cleanly: a source that ends without one is reported as a
// missing tail. A Bus without a chain does nothing.
func (b *Bus) CloseChain(ctx context.Context) error {
	if b.chain == nil {
		return nil
	}
	b.writes.Lock()
	defer b.writes.Unlock()
	closing, err := b.chain.Close(time.Now())
	if err == nil {
		err = b.writeCheckpoints(ctx, closing)
	}
	return err
}

// ChainBroken is what a writer of Seal's envelopes calls when a write's
// outcome is unknown: see chainBroken.
func (b *Bus) ChainBroken(ctx context.Context, stream string, cause error) {
	b.chainBroken(ctx, stream, cause)
}

// chainBroken starts a new session of the chain after a failed append,
// whose entry may or may not be in the stream: the old session then ends
// without a closing checkpoint (a reader reports its tail as possibly
// missing, which it may be) instead of going on past a hole.
func (b *Bus) chainBroken(ctx context.Context, stream string, cause error) {
	if b.chain == nil {
		return
	}
	old := b.chain.Source()
	b.chain.Restart()
	b.log.LogAttrs(ctx, slog.LevelWarn, "audit_chain_restarted",
		slog.String("stream", stream), slog.String("source", old), slog.String("new_source", b.chain.Source()),
		slog.String("error", cause.Error()),
		slog.String("detail", "an append failed with its outcome unknown; the old session ends without a closing checkpoint"))
}

// linkScript appends a link of a chain once: KEYS[1] the stream, KEYS[2]
// the link's CommitKey (of its sig). ARGV[1] is how long the key lives in
// milliseconds, then the fields. The same request run again (go-redis
// retries a command whose reply was lost) appends nothing and answers
// false, instead of a copy that a reader would report as a replay; it
// refreshes the key's expiry, a write, so that a WAIT after it on another
// connection covers the first run's append.
var linkScript = redis.NewScript(`#!lua
if redis.call('PEXPIRE', KEYS[2], ARGV[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return id
`)

// linkArgs are linkScript's keys and arguments for fields, a link of
// stream whose sig is sig.
func linkArgs(stream, sig string, fields []any) ([]string, []any) {
	return []string{stream, CommitKey(stream, sig)}, append([]any{commitMemory.Milliseconds()}, fields...)
}

// writeCheckpoints appends checkpoints, pipelined, each once.
func (b *Bus) writeCheckpoints(ctx context.Context, envs []integrity.StreamEnvelope) error {
	if len(envs) == 0 {
		return nil
	}
	cmds := make([]*redis.Cmd, len(envs))
	queue := func(p redis.Pipeliner, stream string) {
		for i, env := range envs {
			if stream == "" || env.Stream == stream {
				keys, argv := linkArgs(env.Stream, env.Sig, env.Values())
				cmds[i] = linkScript.Eval(ctx, p, keys, argv...)
			}
		}
	}
	var err error
	if b.waits() {
		// One pipeline and WAIT per stream, on the stream's master. A
		// checkpoint not confirmed may be lost on a failover, and the
		// chain would go on past the hole: it restarts instead, as after
		// any failure.
		for _, stream := range distinct(envs, func(e integrity.StreamEnvelope) string { return e.Stream }) {
			if werr := b.replicated(ctx, stream, func(p redis.Pipeliner) { queue(p, stream) }); werr != nil && err == nil {
				err = werr
			}
		}
	} else {
		pipe := b.rdb.Pipeline()
		queue(pipe, "")
		// Exec reports the first command's error only: each is checked.
		_, err = pipe.Exec(ctx)
	}
	// A retry's "written already" (redis.Nil) is no error.
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	for _, c := range cmds {
		if c == nil {
			continue // not sent: the master was not found, err says so
		}
		if cerr := c.Err(); cerr != nil && !errors.Is(cerr, redis.Nil) {
			err = cerr
			break
		}
	}
	if err != nil {
		b.chainBroken(ctx, envs[0].Stream, err)
		return fmt.Errorf("append %d checkpoints: %w", len(envs), err)
	}
	for i, c := range cmds {
		id, _ := c.Val().(string) // "" when a retry found it written
		b.log.LogAttrs(ctx, slog.LevelDebug, "audit_checkpoint_added",
			slog.String("stream", envs[i].Stream), slog.String("entry_id", id),
			slog.String("source", envs[i].Source), slog.Uint64("seq", envs[i].Seq))
	}
	return nil
}

// AppendSealed appends an entry of fields (name, value, …) to stream,
// sealed as the next link of the Bus's chain (integrity.Chain.Seal): for
// records that are not events, such as a dead letter's withdrawal. It
// needs a chained Bus.
func (b *Bus) AppendSealed(ctx context.Context, stream string, fields []string) (string, error) {
	if b.chain == nil {
		return "", fmt.Errorf("%w: a sealed entry needs a chained bus (Config.Source)", ErrInvalidArgs)
	}
	b.writes.Lock()
	defer b.writes.Unlock()
	seal, _, err := b.chain.Seal(stream, fields, time.Now())
	if err != nil {
		return "", fmt.Errorf("seal an entry for stream %q: %w", stream, err)
	}
	keys, argv := linkArgs(stream, seal[len(seal)-1], anys(append(slices.Clone(fields), seal...)))
	cmd, werr := b.runScript(ctx, linkScript, keys, argv...)
	id, err := cmd.Text()
	if errors.Is(err, redis.Nil) {
		id, err = "-", nil // a retry of this request found it written
	}
	if err == nil {
		err = werr
	}
	if err != nil {
		b.chainBroken(ctx, stream, err)
		return "", fmt.Errorf("xadd to stream %q: %w", stream, err)
	}
	_ = b.checkpoint(ctx) // by count; errors are logged there
	return id, nil
}

// distinct lists key of each of xs, each key once, in order (the streams
// of a write's pipelines).
func distinct[T any](xs []T, key func(T) string) []string {
	var out []string
	for _, x := range xs {
		if k := key(x); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
