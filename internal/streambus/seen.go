package streambus

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The processed sequence numbers of chained (envelope version 2) sources,
// per stream and consumer group (each group processes the whole stream),
// which refuse replays and find gaps (docs/trail.md):
//
//   - SeqLowKey(stream, group) is a hash: per source id, its low mark L. Every
//     sequence number up to L is settled: its entry was acknowledged
//     (processed, dropped or dead-lettered), or it was reported missing
//     (audit_sequence_gap) once its grace period ended.
//   - SeenKey(stream, group, source) is a sorted set of the source's entries above
//     L that were delivered: member the entry id, score its sequence number.
//     An entry is added when a read first delivers it (Seen), before any
//     plugin runs, so that a copy read at the same moment by another
//     replica finds it; the commit script adds it too, atomically with the
//     ack, when the lookup did not (Commit without a lookup).
//
// The commit script advances L over the lowest members whose entries are
// acknowledged (no longer pending in the group) and removes them, so a
// source's set holds only what is in flight or above a hole: the state per
// source is bounded by the entries of one grace period plus those in
// flight, and one hash field per source session once it is settled. Both
// keys begin with the stream's name, so they share its hash tag.

// SeqLowKey is the hash of low marks per source of stream's chains, as
// group processed them.
func SeqLowKey(stream, group string) string { return stream + ":seq:" + group + ":low" }

// SeenKey is the sorted set of source's entries above its low mark that
// were delivered to group on stream. It begins with the stream's name, so it
// has the stream's hash tag when the stream has one. (A source id,
// "<name>/<session>", holds a "/" and no ":", so no two keys collide.)
func SeenKey(stream, group, source string) string { return stream + ":seq:" + group + ":" + source }

// Mark is a chained entry's place in its source's sequence, as Seen and
// Commit record it.
type Mark struct {
	// ID is the entry's stream id.
	ID string
	// Source and Seq are its integrity.Link's; Source "" is no mark.
	Source string
	Seq    uint64
}

// SeenVerdict is what Seen found for one Mark.
type SeenVerdict int

const (
	// SeenFresh: first delivery of this (source, seq), or a redelivery of
	// the entry that holds it: run it.
	SeenFresh SeenVerdict = iota
	// SeenReplayed: the (source, seq) was delivered or settled under
	// another entry id: refuse it (reason ReasonReplayed).
	SeenReplayed
	// SeenFinished: the entry itself was acknowledged meanwhile (a stale
	// claim): nothing to do.
	SeenFinished
)

// ReasonReplayed: an entry whose (source, seq) was processed under another
// entry id (a copy of an entry, byte for byte or with its fields reordered).
const ReasonReplayed ReasonKind = "replayed"

// SourceMark is where a source's sequence stands after a commit: Low is its
// low mark, Next the lowest delivered sequence number above Low+1 when the
// numbers between are missing (a hole: Low+1 .. Next-1), 0 when there is no
// hole.
type SourceMark struct {
	Source    string
	Low, Next uint64
}

// Hole returns the missing range of m, ok false when there is none.
func (m SourceMark) Hole() (from, to uint64, ok bool) {
	if m.Next == 0 || m.Next <= m.Low+1 {
		return 0, 0, false
	}
	return m.Low + 1, m.Next - 1, true
}

// compactLua advances a source's low mark over the acknowledged entries at
// the bottom of its set and returns {low, next}. It needs the stream key,
// group, low-mark key, source and set key in its arguments.
const compactLua = `
local function compact(stream, group, lowkey, src, set, done)
  local low = tonumber(redis.call('HGET', lowkey, src) or '0')
  local low0 = low
  local nxt = 0
  while true do
    local m = redis.call('ZRANGE', set, 0, 63, 'WITHSCORES')
    if #m == 0 then break end
    local n = 0
    local stop = false
    for j = 1, #m, 2 do
      local s = tonumber(m[j + 1])
      if s > low + 1 then nxt = s stop = true break end
      if s == low + 1 then
        if not (done and done[m[j]]) and #redis.call('XPENDING', stream, group, m[j], m[j], 1) > 0 then
          stop = true
          break
        end
        low = s
      end
      n = n + 1
    end
    if n > 0 then redis.call('ZREMRANGEBYRANK', set, 0, n - 1) end
    if stop or #m < 128 then break end
  end
  if low ~= low0 then redis.call('HSET', lowkey, src, low) end
  return low, nxt
end
`

// setsLua reads and writes the source sets of a batch's marks in one call
// each, not one per mark (a batch is mostly a run of one source's
// consecutive numbers): sets[set index] = {src, lo, hi, held, add}, where
// held maps a seq to the ids recorded for it and add lists the ZADD
// arguments still to send.
const setsLua = `
local function widen(sets, set, src, seq)
  local g = sets[set]
  if not g then
    g = {src = src, lo = seq, hi = seq, held = {}, add = {}}
    sets[set] = g
  end
  if seq < g.lo then g.lo = seq end
  if seq > g.hi then g.hi = seq end
end
local function readHeld(key, g, low)
  local lo = math.max(g.lo, low + 1)
  if lo > g.hi then return end
  local m = redis.call('ZRANGEBYSCORE', key, lo, g.hi, 'WITHSCORES')
  for j = 1, #m, 2 do
    local s = tonumber(m[j + 1])
    local h = g.held[s]
    if not h then h = {} g.held[s] = h end
    h[#h + 1] = m[j]
  end
end
local function record(g, seq, id)
  g.add[#g.add + 1] = seq
  g.add[#g.add + 1] = id
  local h = g.held[seq]
  if not h then h = {} g.held[seq] = h end
  h[#h + 1] = id
end
local function flushAdds(key, g)
  for c = 1, #g.add, 2000 do
    redis.call('ZADD', key, unpack(g.add, c, math.min(c + 1999, #g.add)))
  end
end
`

// seenScript looks up each mark and records the fresh ones, with one range
// read and one ZADD per source set (a read batch is mostly a run of one
// source's consecutive numbers), not a call per mark.
// KEYS[1] the stream, KEYS[2] its low-mark hash, KEYS[3..] source sets.
// ARGV: group, then per mark: set index in KEYS, source, seq, entry id.
// Returns a SeenVerdict per mark.
var seenScript = redis.NewScript(setsLua + `
local group = ARGV[1]
local marks = {}
local sets = {}
local i = 2
while i <= #ARGV do
  local set, src, seq, id = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  marks[#marks + 1] = {set, seq, id}
  widen(sets, set, src, seq)
  i = i + 4
end
for set, g in pairs(sets) do
  g.low = tonumber(redis.call('HGET', KEYS[2], g.src) or '0')
  readHeld(KEYS[set], g, g.low)
end
local out = {}
for k, mk in ipairs(marks) do
  local g, seq, id = sets[mk[1]], mk[2], mk[3]
  local v = 0
  if seq <= g.low then
    if #redis.call('XPENDING', KEYS[1], group, id, id, 1) > 0 then v = 1 else v = 2 end
  else
    local h = g.held[seq]
    if not h then
      record(g, seq, id)
    else
      v = 1
      for _, x in ipairs(h) do
        if x == id then v = 0 end
      end
    end
  end
  out[k] = v
end
for set, g in pairs(sets) do flushAdds(KEYS[set], g) end
return out
`)

// Seen looks up the marks of a batch just delivered to group on stream, in
// one round trip, and records the fresh ones so that a copy delivered later,
// or at the same time to another consumer, is found. A redelivery of the
// entry that holds its (source, seq) is fresh: only another entry id is a
// replay. Marks with an empty Source are SeenFresh without a lookup.
func (b *Bus) Seen(ctx context.Context, stream, group string, marks []Mark) ([]SeenVerdict, error) {
	if stream == "" || group == "" {
		return nil, fmt.Errorf("%w: seen needs stream and group", ErrInvalidArgs)
	}
	out := make([]SeenVerdict, len(marks))
	keys := []string{stream, SeqLowKey(stream, group)}
	argv := []any{group}
	var asked []int
	for i, m := range marks {
		if m.Source == "" {
			continue
		}
		k := slices.Index(keys[2:], SeenKey(stream, group, m.Source))
		if k < 0 {
			keys = append(keys, SeenKey(stream, group, m.Source))
			k = len(keys)
		} else {
			k += 3
		}
		argv = append(argv, k, m.Source, strconv.FormatUint(m.Seq, 10), m.ID)
		asked = append(asked, i)
	}
	if len(asked) == 0 {
		return out, nil
	}
	res, err := seenScript.Run(ctx, b.rdb, keys, argv...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("look up %d sequence numbers on stream %q: %w", len(asked), stream, err)
	}
	if len(res) != len(asked) {
		return nil, fmt.Errorf("look up %d sequence numbers on stream %q: %d answers", len(asked), stream, len(res))
	}
	for j, i := range asked {
		out[i] = SeenVerdict(res[j])
	}
	return out, nil
}

// settleScript gives up on a hole whose grace period ended: when the
// source's sequence still misses from (its low mark is from-1) and nothing
// of from .. to arrived, the low mark moves to the end of the hole (at most
// to). KEYS: stream, low-mark hash, source set. ARGV: group, source, from,
// to. Returns {settled end or 0, low, next} after compaction.
var settleScript = redis.NewScript(compactLua + `
local group, src, from, to = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local low, nxt = compact(KEYS[1], group, KEYS[2], src, KEYS[3], nil)
if low + 1 ~= from or nxt == 0 then
  return {0, low, nxt}
end
local e = math.min(nxt - 1, to)
redis.call('HSET', KEYS[2], src, e)
low, nxt = compact(KEYS[1], group, KEYS[2], src, KEYS[3], nil)
return {e, low, nxt}
`)

// SettleGap reports a hole of source's sequence on stream as missing for
// good, atomically, once: when the numbers from .. to (or the first part of
// them) are still missing, it moves the source's low mark past them and
// returns the end of the range it settled (from .. settled), 0 when the
// hole was filled or settled by another consumer meanwhile. mark is where the
// source stands afterwards.
func (b *Bus) SettleGap(ctx context.Context, stream, group, source string, from, to uint64) (settled uint64, mark SourceMark, err error) {
	res, err := settleScript.Run(ctx, b.rdb, []string{stream, SeqLowKey(stream, group), SeenKey(stream, group, source)},
		group, source, strconv.FormatUint(from, 10), strconv.FormatUint(to, 10)).Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("%d values", len(res))
	}
	if err != nil {
		return 0, SourceMark{}, fmt.Errorf("settle the gap %d-%d of source %q on stream %q: %w", from, to, source, stream, err)
	}
	return uint64(res[0]), SourceMark{Source: source, Low: uint64(res[1]), Next: uint64(res[2])}, nil
}
