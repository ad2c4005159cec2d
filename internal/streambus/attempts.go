package streambus

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// chargeScript counts one attempt for each id still pending in the group,
// in the attempts hash, and returns per id {attempts, deliveries}, {0, 0}
// for an id no longer pending (finished meanwhile: nothing to count, and no
// count left behind).
//
// KEYS[1] is the stream, KEYS[2] its attempts hash; ARGV: group, ids.
var chargeScript = redis.NewScript(`
local out = {}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 then
    out[#out + 1] = {redis.call('HINCRBY', KEYS[2], ARGV[i], 1), p[1][4]}
  else
    out[#out + 1] = {0, 0}
  end
end
return out
`)

// Charged is what Charge counted for one entry.
type Charged struct {
	// Attempts is the entry's attempt count now, 0 when it was no longer
	// pending (and so not charged).
	Attempts int64
	// Deliveries is the entry's delivery count.
	Deliveries int64
}

// Charge counts one attempt for each of ids that is still pending in group
// on stream: its pipeline failed, or its process died while running it.
// Reads and claims never count (Entry.Attempts).
func (b *Bus) Charge(ctx context.Context, stream, group string, ids ...string) ([]Charged, error) {
	if stream == "" || group == "" {
		return nil, fmt.Errorf("%w: charge needs stream and group", ErrInvalidArgs)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	argv := make([]any, 0, 1+len(ids))
	argv = append(argv, group)
	for _, id := range ids {
		argv = append(argv, id)
	}
	res, err := chargeScript.Run(ctx, b.rdb, []string{stream, AttemptsKey(stream)}, argv...).Slice()
	if err != nil {
		return nil, fmt.Errorf("charge %d attempts on stream %q group %q: %w", len(ids), stream, group, err)
	}
	out := make([]Charged, len(ids))
	for i := range out {
		if pair, ok := res[i].([]any); ok && len(pair) == 2 {
			out[i].Attempts, _ = pair[0].(int64)
			out[i].Deliveries, _ = pair[1].(int64)
		}
	}
	return out, nil
}

// touchScript makes the ids that consumer holds in group look fresh
// (XCLAIM to itself with JUSTID: idle time reset, delivery count unchanged)
// and returns how many it touched. An id another consumer holds now is
// left alone. KEYS[1] is the stream; ARGV: group, consumer, ids.
var touchScript = redis.NewScript(`
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
`)

// Touch resets the idle time of the entries consumer still holds among ids,
// without counting a delivery, so that no other consumer's XAUTOCLAIM takes
// entries that are queued or running. It returns how many it touched.
func (b *Bus) Touch(ctx context.Context, stream, group, consumer string, ids ...string) (int64, error) {
	if stream == "" || group == "" || consumer == "" {
		return 0, fmt.Errorf("%w: touch needs stream, group and consumer", ErrInvalidArgs)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	argv := make([]any, 0, 2+len(ids))
	argv = append(argv, group, consumer)
	for _, id := range ids {
		argv = append(argv, id)
	}
	n, err := touchScript.Run(ctx, b.rdb, []string{stream}, argv...).Int64()
	if err != nil {
		return 0, fmt.Errorf("touch %d entries on stream %q group %q: %w", len(ids), stream, group, err)
	}
	return n, nil
}

// Letter returns the dead letter of an entry read raw (XRange, or refused
// by verification), with every field as stored, in order.
func (e RawEntry) Letter(reason Reason, deliveries int64) Letter {
	// The key id the entry names: its first kid field (an entry that names
	// more than one is refused by verification).
	var kid string
	fields := make([]any, 0, len(e.Fields)+1)
	for i := 0; i+1 < len(e.Fields); i += 2 {
		if e.Fields[i] == integrity.FieldKeyID && kid == "" {
			kid = e.Fields[i+1]
		}
		fields = append(fields, e.Fields[i], e.Fields[i+1])
	}
	if len(e.Fields)%2 != 0 { // a name without a value: kept, with an empty one
		fields = append(fields, e.Fields[len(e.Fields)-1], "")
	}
	return Letter{ID: e.ID, Reason: reason, Deliveries: deliveries, KeyID: kid, Fields: fields}
}
