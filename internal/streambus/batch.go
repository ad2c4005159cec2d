package streambus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// DefaultDedupWindow is how long Redis remembers a producer's last sequence
// number, or an event id written by AppendOnce, after its last write.
const DefaultDedupWindow = 24 * time.Hour

// ErrSeqGap: a batch starts after the next sequence number Redis expects
// from its producer, so an earlier batch of the producer is missing; nothing
// of the batch was written. Send the missing batches first.
var ErrSeqGap = errors.New("streambus: producer sequence gap")

// batchScript appends a producer's batch of signed entries exactly once
// and in order. Every entry carries a sequence number (the batch's first
// plus its position); KEYS[2], the producer's key, holds "<source> <last
// seq> <last event number>" (a bare number from earlier versions: both
// numbers). Entries at or below the last seq were written before (a retried
// batch whose reply was lost) and are skipped; a batch that starts beyond
// the next one is refused whole with SEQGAP. A batch of another source (a
// new session of the same named producer: a re-run of the same file) skips
// its leading events numbered at or below the last event number instead,
// so that no event is stored twice. A missing key (a new producer, or one
// idle past the dedup window) accepts any start.
//
// An envelope version 2 batch (a source) is XADDed as v 2 with src, seq,
// prev (the previous entry's sig, the batch's prev for the first) and kind;
// version 1 batches (spool records of earlier versions) as v 1. Each
// entry's seq (the batch's chain seq plus the position) is formatted by the
// client: the field stays exact beyond 2^53, where a Lua number rounds, and
// Redis runs no string.format per entry (about 0.2 of the script's 4.2 µs).
//
// The "#!lua" shebang makes Redis refuse the whole script up front when it
// is out of memory. A write that still fails half-way (pcall) records the
// entries written so far before returning, so a retry neither doubles nor
// skips any.
//
// The producer key also keeps the producer's shard layout (AppendBatch.
// Layout) as a fourth word, when it has one; a batch without one (drained
// from a spool) keeps the recorded one.
//
// KEYS[1] the stream, KEYS[2] the producer key. ARGV: first seq, dedup
// window in ms, maxlen (0: none), kid, source ("" for version 1), chain
// seq, prev, first event number, layout; for version 2 the kinds (a byte
// per entry: c for a checkpoint, e for an event); then per entry (its chain
// seq for version 2) event and sig. Returns {skipped, {new ids}, error or
// false}.
var batchScript = redis.NewScript(`#!lua
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'stream' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t .. ', not a stream: nothing was written')
end
local first = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[3])
local kid = ARGV[4]
local src = ARGV[5]
local firstev = tonumber(ARGV[8])
local layout = ARGV[9]
local base, step, kinds = 10, 2, ''
if src ~= '' then
  base, step, kinds = 11, 3, ARGV[10]
end
local n = (#ARGV - base + 1) / step
local byte = string.byte
local function isevent(i)
  return step == 2 or byte(kinds, i + 1) ~= 99
end
local skip = 0
local lastev = 0
local raw = redis.call('GET', KEYS[2])
if raw then
  local s, l, e, lay = string.match(raw, '^(%S+) (%d+) (%d+) ?(%S*)$')
  local last
  if s then
    last, lastev = tonumber(l), tonumber(e)
    if layout == '' then
      layout = lay
    end
  else
    last = tonumber(raw)
    s, lastev = src, last
  end
  if s == src then
    if first > last + 1 then
      return redis.error_reply('SEQGAP the producer wrote up to ' .. string.format('%d', last) .. ', this batch starts at ' .. ARGV[1] .. ': nothing was written')
    end
    skip = math.min(last + 1 - first, n)
  else
    local ev = firstev
    for i = 0, n - 1 do
      if isevent(i) then
        if ev > lastev then
          break
        end
        ev = ev + 1
      end
      skip = i + 1
    end
  end
end
local ids = {}
local failed = false
local call, key, fmt = redis.pcall, KEYS[1], string.format
local evs = 0
if step == 2 then
  for i = skip, n - 1 do
    local o = base + 2 * i
    local r
    if maxlen > 0 then
      r = call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'v', '1', 'kid', kid, 'event', ARGV[o], 'sig', ARGV[o + 1])
    else
      r = call('XADD', key, '*', 'v', '1', 'kid', kid, 'event', ARGV[o], 'sig', ARGV[o + 1])
    end
    if type(r) == 'table' then
      failed = r.err
      break
    end
    ids[#ids + 1] = r
  end
  evs = skip + #ids
else
  local prev = ARGV[7]
  if skip > 0 then
    prev = ARGV[base + 3 * skip - 1]
  end
  for i = 0, skip - 1 do
    if isevent(i) then
      evs = evs + 1
    end
  end
  local nids = 0
  for i = skip, n - 1 do
    local o = base + 3 * i
    local kind = 'event'
    if byte(kinds, i + 1) == 99 then
      kind = 'checkpoint'
    end
    local sig = ARGV[o + 2]
    local r
    if maxlen > 0 then
      r = call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'v', '2', 'kid', kid, 'src', src, 'seq', ARGV[o], 'prev', prev, 'kind', kind, 'event', ARGV[o + 1], 'sig', sig)
    else
      r = call('XADD', key, '*', 'v', '2', 'kid', kid, 'src', src, 'seq', ARGV[o], 'prev', prev, 'kind', kind, 'event', ARGV[o + 1], 'sig', sig)
    end
    if type(r) == 'table' then
      failed = r.err
      break
    end
    nids = nids + 1
    ids[nids] = r
    prev = sig
    if kind == 'event' then
      evs = evs + 1
    end
  end
end
if #ids > 0 then
  local name = src
  if name == '' then
    name = '-'
  end
  local val = name .. ' ' .. fmt('%d', first + skip + #ids - 1) .. ' ' .. fmt('%d', math.max(lastev, firstev + evs - 1))
  if layout ~= '' then
    val = val .. ' ' .. layout
  end
  redis.call('SET', KEYS[2], val, 'PX', ARGV[2])
elseif raw then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {skip, ids, failed}
`)

// AppendBatch is a producer's run of signed events for one stream, with
// consecutive sequence numbers from FirstSeq.
type AppendBatch struct {
	Stream   string
	Producer string
	FirstSeq uint64
	KeyID    string
	// Events are stamped and signed (integrity.AppendStamped, AppendSig);
	// Sigs[i] is Events[i]'s hex signature.
	Events [][]byte
	Sigs   [][]byte
	// EventIDs[i] is Events[i]'s event_id.
	EventIDs []string

	// Source, when set, makes the batch envelope version 2: entry i is
	// link ChainSeq+i of Source, with Kinds[i] (integrity.KindEvent or
	// KindCheckpoint) and the prev Sigs[i-1] (Prev for entry 0). Without a
	// Source the entries are version 1 events.
	Source   string
	ChainSeq uint64
	Prev     string
	Kinds    []string
	// FirstEvent is the number of the batch's first event among the
	// producer's events (checkpoints not counted); 0 means FirstSeq.
	FirstEvent uint64
	// Layout is the producer's shard layout, kept with its sequence (one
	// word, no spaces; "" for one shard, or to keep the recorded one).
	Layout string
}

// Len is the number of events.
func (b *AppendBatch) Len() int { return len(b.Events) }

// AppendResult is what Redis did with a AppendBatch.
type AppendResult struct {
	// Skipped events, from the start, had been written before.
	Skipped int
	// IDs are the entry ids of the events written now, from Events[Skipped].
	IDs []string
	// Err, when not nil, stopped the batch after IDs: the events after them
	// were not written.
	Err error
}

// ProducerKey is the key that holds a producer's last sequence number for
// stream. It extends the stream's name, so that a stream named with a hash
// tag ("audit:{0}") puts it in the stream's slot.
func ProducerKey(stream, producer string) string { return stream + ":producer:" + producer }

// EventKey is the key AppendOnce sets for an event id on stream.
func EventKey(stream, eventID string) string { return stream + ":event:" + eventID }

// AppendBatches appends batches in one round trip (one script call per
// batch, pipelined), in order. window is how long Redis remembers each
// producer's sequence (≤ 0: DefaultDedupWindow). It returns one result per
// batch; err is set when the round trip itself failed (then no result says
// anything, and the outcome of every batch is unknown unless the
// connection could not be made). A batch Redis refused gets a result whose Err is set and
// whose IDs are empty (ErrSeqGap for a gap). When the Bus waits for
// replicas (a round trip per stream then), a *NotReplicatedError comes
// with the results: the master did what they say, and fewer replicas
// confirmed it; sending the batches again skips what is there and waits
// again.
func (b *Bus) AppendBatches(ctx context.Context, batches []*AppendBatch, maxLen int64, window time.Duration) ([]AppendResult, error) {
	if window <= 0 {
		window = DefaultDedupWindow
	}
	if maxLen < 0 {
		return nil, fmt.Errorf("%w: maxlen %d is negative", ErrInvalidArgs, maxLen)
	}
	for _, bt := range batches {
		if bt.Stream == "" || bt.Producer == "" || bt.FirstSeq == 0 || len(bt.Events) != len(bt.Sigs) {
			return nil, fmt.Errorf("%w: batch needs a stream, a producer, a first seq above 0 and a sig per event", ErrInvalidArgs)
		}
		if bt.Source != "" && (bt.ChainSeq == 0 || len(bt.Kinds) != len(bt.Events)) {
			return nil, fmt.Errorf("%w: a chained batch needs a chain seq above 0 and a kind per entry", ErrInvalidArgs)
		}
		for i, k := range bt.Kinds {
			if k != integrity.KindEvent && k != integrity.KindCheckpoint {
				return nil, fmt.Errorf("%w: entry %d's kind %q is neither %s nor %s", ErrInvalidArgs, i, k, integrity.KindEvent, integrity.KindCheckpoint)
			}
		}
	}
	cmds, werr, err := b.runBatches(ctx, batches, maxLen, window)
	if err != nil && isNoScript(err) {
		// Nothing ran: load the script and send the batches again.
		if lerr := batchScript.Load(ctx, b.rdb).Err(); lerr != nil {
			return nil, fmt.Errorf("load the append script: %w", lerr)
		}
		cmds, werr, err = b.runBatches(ctx, batches, maxLen, window)
	}
	if err != nil && !IsRedisError(err) {
		return nil, err // the round trip failed
	}
	out := make([]AppendResult, len(batches))
	for i, c := range cmds {
		out[i] = batchResult(c)
	}
	return out, werr
}

// runBatches sends the batches: in one pipeline, or, when the Bus waits for
// replicas, in one per stream followed by WAIT (replicated), whose error is
// werr. err is the first batch's error, as a pipeline's Exec reports it.
func (b *Bus) runBatches(ctx context.Context, batches []*AppendBatch, maxLen int64, window time.Duration) (cmds []*redis.Cmd, werr, err error) {
	ms := window.Milliseconds()
	var args []any
	cmds = make([]*redis.Cmd, len(batches))
	queue := func(p redis.Pipeliner, stream string) {
		for j, bt := range batches {
			if stream != "" && bt.Stream != stream {
				continue
			}
			firstEvent := bt.FirstEvent
			if firstEvent == 0 {
				firstEvent = bt.FirstSeq
			}
			args = append(args[:0], bt.FirstSeq, ms, maxLen, bt.KeyID, bt.Source, bt.ChainSeq, bt.Prev, firstEvent, bt.Layout)
			if bt.Source == "" {
				for i := range bt.Events {
					args = append(args, bt.Events[i], bt.Sigs[i])
				}
			} else {
				// The kinds as a byte each, every entry's chain seq in
				// one buffer (go-redis keeps the slices until it writes).
				kinds := make([]byte, len(bt.Kinds))
				seqs := make([]byte, 0, 20*len(bt.Events))
				for i, k := range bt.Kinds {
					kinds[i] = k[0]
				}
				args = append(args, kinds)
				for i := range bt.Events {
					at := len(seqs)
					seqs = strconv.AppendUint(seqs, bt.ChainSeq+uint64(i), 10)
					args = append(args, seqs[at:len(seqs):len(seqs)], bt.Events[i], bt.Sigs[i])
				}
			}
			// go-redis keeps the argument slice: give each command its own.
			a := make([]any, len(args))
			copy(a, args)
			cmds[j] = batchScript.EvalSha(ctx, p, []string{bt.Stream, ProducerKey(bt.Stream, bt.Producer)}, a...)
		}
	}
	if !b.waits() {
		_, err = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			queue(p, "")
			return nil
		})
		return cmds, nil, err
	}
	for _, stream := range distinct(batches, func(bt *AppendBatch) string { return bt.Stream }) {
		e := b.replicated(ctx, stream, func(p redis.Pipeliner) { queue(p, stream) })
		if e != nil && werr == nil {
			werr = e
		}
		for j, bt := range batches {
			if bt.Stream == stream && cmds[j] == nil {
				cmds[j] = failedCmd(ctx, e) // not sent: the master was not found
			}
		}
	}
	for _, c := range cmds {
		if err = c.Err(); err != nil {
			break
		}
	}
	return cmds, werr, err
}

func batchResult(c *redis.Cmd) AppendResult {
	res, err := c.Slice()
	if err != nil {
		if redis.HasErrorPrefix(err, "SEQGAP") {
			err = fmt.Errorf("%w: %w", ErrSeqGap, err)
		}
		return AppendResult{Err: err}
	}
	var r AppendResult
	if len(res) < 2 {
		return AppendResult{Err: fmt.Errorf("streambus: append script reply has %d elements", len(res))}
	}
	skipped, _ := res[0].(int64)
	r.Skipped = int(skipped)
	raw, _ := res[1].([]any)
	r.IDs = make([]string, 0, len(raw))
	for _, id := range raw {
		s, _ := id.(string)
		r.IDs = append(r.IDs, s)
	}
	if len(res) > 2 {
		if msg, ok := res[2].(string); ok {
			r.Err = fmt.Errorf("xadd after %d event(s): %s", len(r.IDs), msg)
		}
	}
	return r
}

// onceScript appends one signed envelope unless an event with its id was
// appended through it within the dedup window, in which case it returns
// the entry id of that first append. KEYS[1] the stream, KEYS[2] the event
// key. ARGV: window ms, maxlen (0: none), then the envelope's fields and
// values. Returns {entry id, 1 if it was there before}. A retry refreshes
// the event key's expiry: a write, so that a WAIT after it on another
// connection covers the first append.
var onceScript = redis.NewScript(`#!lua
local old = redis.call('GET', KEYS[2])
if old then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  return {old, 1}
end
local cmd = {'XADD', KEYS[1]}
if tonumber(ARGV[2]) > 0 then
  cmd[#cmd + 1] = 'MAXLEN'
  cmd[#cmd + 1] = '~'
  cmd[#cmd + 1] = ARGV[2]
end
cmd[#cmd + 1] = '*'
for i = 3, #ARGV do
  cmd[#cmd + 1] = ARGV[i]
end
local id = redis.call(unpack(cmd))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 0}
`)

// AppendOnce appends a signed envelope to stream unless an envelope with the
// same event id was appended through AppendOnce within window (≤ 0:
// DefaultDedupWindow); it returns the entry id, and true when the event was
// there already (a retry after a lost reply). When the Bus waits for
// replicas, a *NotReplicatedError comes with the id: the master holds the
// event; calling AppendOnce again waits again, and appends nothing.
func (b *Bus) AppendOnce(ctx context.Context, stream string, env integrity.Envelope, maxLen int64, window time.Duration) (string, bool, error) {
	if window <= 0 {
		window = DefaultDedupWindow
	}
	if stream == "" || env.EventID == "" {
		return "", false, fmt.Errorf("%w: empty stream name or event id", ErrInvalidArgs)
	}
	args := append([]any{window.Milliseconds(), maxLen}, env.Values()...)
	cmd, werr := b.runScript(ctx, onceScript, []string{stream, EventKey(stream, env.EventID)}, args...)
	res, err := cmd.Slice()
	if err != nil {
		return "", false, fmt.Errorf("append to stream %q: %w", stream, err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("streambus: append reply has %d elements", len(res))
	}
	id, _ := res[0].(string)
	dup, _ := res[1].(int64)
	if werr != nil {
		werr = fmt.Errorf("append to stream %q: %w", stream, werr)
	}
	return id, dup == 1, werr
}

func isNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

// IsRedisError: Redis answered with an error reply (so the command, or the
// script, did not run or stopped where it said), as opposed to a failed
// connection or a timeout, after which the outcome is unknown.
func IsRedisError(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// DurabilityProblems says why Redis could lose appended entries on its own:
// an eviction policy other than noeviction, or no AOF. The error is CONFIG
// GET's (a server that forbids it, or does not answer).
func DurabilityProblems(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	policy, err1 := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	aof, err2 := rdb.ConfigGet(ctx, "appendonly").Result()
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	var problems []string
	if p := policy["maxmemory-policy"]; p != "noeviction" {
		problems = append(problems, fmt.Sprintf("maxmemory-policy is %q: Redis may evict audit entries under memory pressure (set noeviction)", p))
	}
	if a := aof["appendonly"]; a != "yes" {
		problems = append(problems, "appendonly is off: entries written since the last snapshot are lost if Redis stops (set appendonly yes)")
	}
	return problems, nil
}
