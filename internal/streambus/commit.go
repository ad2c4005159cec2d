package streambus

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// addAndAck appends entries to streams and then acknowledges ids, atomically
// (a script runs alone, like MULTI/EXEC) and in order: unlike MULTI/EXEC, a
// failing XADD (say WRONGTYPE on the target key) stops the script before the
// XACK, so an entry is never acknowledged without its copy being written.
//
// KEYS[1] is the source stream, KEYS[2..] the target streams.
// ARGV: group, number of adds, then per add: key index, maxlen (0: none),
// field count, fields and values; then the ids to acknowledge.
// Returns {acked count, {new ids}}.
var addAndAck = redis.NewScript(`
local group = ARGV[1]
local nadd = tonumber(ARGV[2])
local i = 3
local added = {}
for a = 1, nadd do
  local key = KEYS[tonumber(ARGV[i])]
  local maxlen = tonumber(ARGV[i + 1])
  local nf = tonumber(ARGV[i + 2])
  i = i + 3
  local cmd = {'XADD', key}
  if maxlen > 0 then
    cmd[#cmd + 1] = 'MAXLEN'
    cmd[#cmd + 1] = '~'
    cmd[#cmd + 1] = maxlen
  end
  cmd[#cmd + 1] = '*'
  for f = 1, nf * 2 do
    cmd[#cmd + 1] = ARGV[i]
    i = i + 1
  end
  added[a] = redis.call(unpack(cmd))
end
local acked = 0
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ARGV, i, j))
  i = j + 1
end
return {acked, added}
`)

// add is one entry for addAndAck.
type add struct {
	stream string
	maxLen int64
	fields []any
}

// runAddAndAck runs addAndAck and returns the new ids and the acked count.
func (b *Bus) runAddAndAck(ctx context.Context, stream, group string, adds []add, ack []string) ([]string, int64, error) {
	keys := []string{stream}
	argv := []any{group, len(adds)}
	for _, a := range adds {
		k := slices.Index(keys[1:], a.stream)
		if k < 0 {
			keys = append(keys, a.stream)
			k = len(keys) - 1
		} else {
			k++
		}
		argv = append(argv, k+1, a.maxLen, len(a.fields)/2)
		argv = append(argv, a.fields...)
	}
	for _, id := range ack {
		argv = append(argv, id)
	}
	res, err := addAndAck.Run(ctx, b.rdb, keys, argv...).Slice()
	if err != nil {
		return nil, 0, err
	}
	acked, _ := res[0].(int64)
	raw, _ := res[1].([]any)
	ids := make([]string, len(raw))
	for i, r := range raw {
		ids[i], _ = r.(string)
	}
	return ids, acked, nil
}

// Letter is an entry to move to a dead-letter stream.
type Letter struct {
	// ID is the entry's id in the source stream.
	ID string
	// Reason says why it is dead-lettered, for example "max_deliveries" or a
	// verification reason such as "signature_mismatch".
	Reason string
	// Deliveries is how many times it was delivered.
	Deliveries int64
	// KeyID is the key id the entry names, "" when it names none.
	KeyID string
	// Fields are the entry's fields as stored, as field, value pairs.
	Fields []any
}

// Letter returns the dead letter of a verified entry.
func (e Entry) Letter(reason string) Letter {
	return Letter{ID: e.ID, Reason: reason, Deliveries: e.Deliveries, KeyID: e.KeyID, Fields: e.Envelope().Values()}
}

// Letter returns the dead letter of an entry that failed verification, with
// its verification reason.
func (t Tampered) Letter() Letter {
	kid, _ := t.Fields["kid"].(string)
	keys := make([]string, 0, len(t.Fields))
	for k := range t.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fields := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		fields = append(fields, k, t.Fields[k])
	}
	return Letter{ID: t.ID, Reason: t.Reason, Deliveries: t.Deliveries, KeyID: kid, Fields: fields}
}

// Fields of a dead-letter entry. The original entry's fields follow, each
// name prefixed with DeadLetterFieldPrefix, so that a signed entry can be
// replayed to OriginalStream unchanged.
const (
	DeadLetterOriginalID     = "original_id"
	DeadLetterOriginalStream = "original_stream"
	DeadLetterReason         = "reason"
	DeadLetterDeliveries     = "deliveries"
	DeadLetterKeyID          = "kid"
	DeadLetterFieldPrefix    = "entry."
)

// DeadLetter appends each letter to the dead-letter stream dlq and
// acknowledges its id in group on stream, atomically: either the copies are
// written and the ids acknowledged, or nothing is acknowledged. It returns
// the new dead-letter entry ids. The dead-letter stream is never trimmed.
func (b *Bus) DeadLetter(ctx context.Context, stream, group, dlq string, letters ...Letter) ([]string, error) {
	if stream == "" || group == "" || dlq == "" {
		return nil, fmt.Errorf("%w: dead-letter needs stream, group and dead-letter stream", ErrInvalidArgs)
	}
	if len(letters) == 0 {
		return nil, nil
	}
	adds := make([]add, len(letters))
	ack := make([]string, len(letters))
	for i, l := range letters {
		fields := []any{
			DeadLetterOriginalID, l.ID, DeadLetterOriginalStream, stream,
			DeadLetterReason, l.Reason, DeadLetterDeliveries, strconv.FormatInt(l.Deliveries, 10),
			DeadLetterKeyID, l.KeyID,
		}
		for j := 0; j+1 < len(l.Fields); j += 2 {
			fields = append(fields, DeadLetterFieldPrefix+fmt.Sprint(l.Fields[j]), l.Fields[j+1])
		}
		adds[i] = add{stream: dlq, fields: fields}
		ack[i] = l.ID
	}
	ids, acked, err := b.runAddAndAck(ctx, stream, group, adds, ack)
	if err != nil {
		return nil, fmt.Errorf("dead-letter %d entries from stream %q group %q to %q: %w", len(letters), stream, group, dlq, err)
	}
	for i, l := range letters {
		b.log.LogAttrs(ctx, slog.LevelWarn, "message_dead_lettered",
			slog.String("stream", stream), slog.String("group", group), slog.String("entry_id", l.ID),
			slog.String("dead_letter_stream", dlq), slog.String("dead_letter_id", ids[i]),
			slog.String("reason", l.Reason), slog.Int64("deliveries", l.Deliveries))
	}
	b.logAcked(ctx, stream, group, len(ack), acked)
	return ids, nil
}

// Add is an event to append to a stream in Commit.
type Add struct {
	Stream string
	// Event is stamped and signed for Stream, as in XAdd.
	Event []byte
	// MaxLen as in XAdd: 0 never trims.
	MaxLen int64
}

// Commit appends the events, signed, to their streams and then acknowledges
// ack in group on stream, atomically: the acknowledgement happens only if
// every append succeeded. It returns the new entry ids, in the order of adds,
// and the number of ids acknowledged.
func (b *Bus) Commit(ctx context.Context, stream, group string, ack []string, adds ...Add) ([]string, int64, error) {
	if stream == "" || group == "" {
		return nil, 0, fmt.Errorf("%w: commit needs stream and group", ErrInvalidArgs)
	}
	if len(ack) == 0 && len(adds) == 0 {
		return nil, 0, nil
	}
	sealed := make([]add, len(adds))
	for i, a := range adds {
		if a.Stream == "" || a.MaxLen < 0 {
			return nil, 0, fmt.Errorf("%w: commit add %d needs a stream and a non-negative maxlen", ErrInvalidArgs, i)
		}
		env, err := b.seal(a.Stream, a.Event)
		if err != nil {
			return nil, 0, err
		}
		sealed[i] = add{stream: a.Stream, maxLen: a.MaxLen, fields: env.Values()}
	}
	ids, acked, err := b.runAddAndAck(ctx, stream, group, sealed, ack)
	if err != nil {
		return nil, 0, fmt.Errorf("commit %d events and %d acks on stream %q group %q: %w", len(adds), len(ack), stream, group, err)
	}
	b.log.LogAttrs(ctx, slog.LevelDebug, "messages_committed",
		slog.String("stream", stream), slog.String("group", group),
		slog.Int("added", len(ids)), slog.Int64("acked", acked))
	return ids, acked, nil
}
