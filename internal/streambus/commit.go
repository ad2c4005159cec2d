package streambus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// commitScript acknowledges entries and appends what their processing
// produced, atomically (a script runs alone) and exactly once per entry:
//
//   - every target key is checked first: a key that is neither a stream nor
//     absent fails the whole script before anything is written (Redis does
//     not roll back a script that fails half-way);
//   - per item, XACK comes first, and its entries are appended only when that
//     XACK found the id pending. A commit retried after a lost reply, or a
//     second consumer committing an entry it claimed meanwhile, acknowledges
//     nothing and so appends nothing twice;
//   - an item marked forget has its count removed from the attempts hash
//     when its XACK found it pending.
//
// The "#!lua" shebang makes Redis (7.0+) refuse the whole script up front
// when it is out of memory, instead of failing at its first write.
//
// KEYS[1] is the source stream, KEYS[2..] the target streams, then, when
// used, the attempts hash, the low-mark hash of chained sources and their
// sets (seen.go).
// ARGV: group, number of items, index of the attempts hash in KEYS (0:
// none), index of the low-mark hash (0: none), index of the last target
// stream, index of the commit key (0: none; see CommitKey), then per item: id, forget (0 or 1), index of its source's set (0:
// no mark), source, seq, strict (0 or 1), number of adds, then per add: key
// index, maxlen (0: none), field count, fields and values.
//
// An item with a mark whose (source, seq) is settled or held by another
// entry id is a replay: a strict item (a processed entry) is then neither
// acknowledged nor appended, and its index is returned in the replayed list,
// to be dead-lettered; a letter is acknowledged and appended without taking
// the mark. Otherwise the mark is recorded with the ack, and every source
// touched has its low mark advanced (compact).
// Returns {acked count, {per add: new id, or false when skipped}, {replayed
// item indices, from 1}, {per source touched: source, low, next}}.
var commitScript = redis.NewScript("#!lua\n" + compactLua + setsLua + "local commitMemoryMS = " + strconv.FormatInt(commitMemory.Milliseconds(), 10) + "\n" + `
-- xadd appends to key the nf fields and values at ARGV[i...].
local function xadd(key, maxlen, i, nf)
  if nf == 4 and maxlen == 0 then
    -- The envelope's four fields, the common case: no table to build.
    return redis.call('XADD', key, '*', ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
      ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
  end
  if nf == 8 and maxlen == 0 then
    -- A chained envelope's eight.
    return redis.call('XADD', key, '*', ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
      ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11],
      ARGV[i + 12], ARGV[i + 13], ARGV[i + 14], ARGV[i + 15])
  end
  local cmd = {'XADD', key}
  if maxlen > 0 then
    cmd[#cmd + 1] = 'MAXLEN'
    cmd[#cmd + 1] = '~'
    cmd[#cmd + 1] = maxlen
  end
  cmd[#cmd + 1] = '*'
  for f = 0, nf * 2 - 1 do
    cmd[#cmd + 1] = ARGV[i + f]
  end
  return redis.call(unpack(cmd))
end
local attempts = tonumber(ARGV[3])
local lowkey = tonumber(ARGV[4])
for k = 2, tonumber(ARGV[5]) do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. t .. ', not a stream: nothing was written')
  end
end
local group = ARGV[1]
local nitems = tonumber(ARGV[2])
local ckey = tonumber(ARGV[6])
if ckey > 0 then
  -- This very commit ran already (a client retry after a lost reply, or a
  -- request delivered late): say what that run appended, so that the
  -- client does not void what is there. '-' stands for an id.
  local ran = redis.call('GET', KEYS[ckey])
  if ran then
    -- The key lives on from now: a rerun writes, so that a WAIT after it
    -- on another connection covers the first run's writes too.
    redis.call('PEXPIRE', KEYS[ckey], commitMemoryMS)
    -- "<flag per add>|<acked>|<replayed item indices, comma-separated>"
    local flags, nacked, reps = string.match(ran, '^([01]*)|(%d+)|([%d,]*)$')
    local out = {}
    for c = 1, #flags do
      if string.sub(flags, c, c) == '1' then out[c] = '-' else out[c] = false end
    end
    local rep = {}
    for r in string.gmatch(reps, '%d+') do rep[#rep + 1] = tonumber(r) end
    return {tonumber(nacked), out, rep, {}}
  end
end
local acked = 0
local added = {}
local replayed = {}
local touched = {}
local lows = {}
local done = {}
-- The marks' sets, read once each: per set, the ids recorded per seq over
-- the range of the commit's seqs (a commit is mostly a run of one source's
-- consecutive numbers), and the ZADDs to make.
local sets = {}
local i = 7
for e = 1, nitems do
  local set, src, seq = tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  if set > 0 then widen(sets, set, src, seq) end
  local nadd = tonumber(ARGV[i + 6])
  i = i + 7
  for a = 1, nadd do
    i = i + 3 + tonumber(ARGV[i + 2]) * 2
  end
end
for set, g in pairs(sets) do
  local low = lows[g.src]
  if not low then
    low = tonumber(redis.call('HGET', KEYS[lowkey], g.src) or '0')
    lows[g.src] = low
  end
  readHeld(KEYS[set], g, low)
end
i = 7
for e = 1, nitems do
  local id, set, src, seq = ARGV[i], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  local clash = false
  local held = false
  if set > 0 then
    if seq <= lows[src] then
      clash = true
    else
      for _, m in ipairs(sets[set].held[seq] or {}) do
        if m == id then held = true else clash = true end
      end
    end
  end
  local ok = 0
  if clash and ARGV[i + 5] == '1' then
    -- A replay, unless the entry is no longer pending: then it was
    -- acknowledged already (by a first run of this very request, or by
    -- another consumer), and there is nothing to do.
    if #redis.call('XPENDING', KEYS[1], group, id, id, 1) > 0 then
      replayed[#replayed + 1] = e
    end
  else
    ok = redis.call('XACK', KEYS[1], group, id)
  end
  if ok == 1 and ARGV[i + 1] == '1' then
    redis.call('HDEL', KEYS[attempts], id)
  end
  if ok == 1 and set > 0 and not clash then
    if not held then record(sets[set], seq, id) end
    done[id] = true
  end
  if set > 0 then touched[set] = src end
  local nadd = tonumber(ARGV[i + 6])
  i = i + 7
  acked = acked + ok
  for a = 1, nadd do
    local key = KEYS[tonumber(ARGV[i])]
    local maxlen = tonumber(ARGV[i + 1])
    local nf = tonumber(ARGV[i + 2])
    i = i + 3
    if ok == 1 then
      added[#added + 1] = xadd(key, maxlen, i, nf)
    else
      added[#added + 1] = false
    end
    i = i + nf * 2
  end
end
for set, g in pairs(sets) do flushAdds(KEYS[set], g) end
if ckey > 0 then
  local flags = {}
  for c = 1, #added do
    if added[c] then flags[c] = '1' else flags[c] = '0' end
  end
  redis.call('SET', KEYS[ckey], table.concat(flags) .. '|' .. acked .. '|' .. table.concat(replayed, ','), 'PX', commitMemoryMS)
end
local marks = {}
for set, src in pairs(touched) do
  local low, nxt = compact(KEYS[1], group, KEYS[lowkey], src, KEYS[set], done)
  marks[#marks + 1] = src
  marks[#marks + 1] = low
  marks[#marks + 1] = nxt
end
return {acked, added, replayed, marks}
`)

// scriptAdd is one signed entry to append in commitScript: the wire form of
// an Add (or of a dead letter).
type scriptAdd struct {
	stream string
	maxLen int64
	fields []any
	// env is the add's envelope when it is a link of the Bus's chain (its
	// Seq set): an add not appended gets a void (voidSkipped).
	env integrity.Envelope
}

// scriptItem is one entry to acknowledge in commitScript with the entries to
// append for it: the wire form of an Item (or of a Letter).
type scriptItem struct {
	id     string
	forget bool // remove its count from the attempts hash
	mark   Mark // Source "": none
	strict bool // a replayed mark refuses the item (not a letter)
	adds   []scriptAdd
}

// commitOutcome is what commitScript did.
type commitOutcome struct {
	// ids holds, per item, the new ids of its adds, or nil when the item was
	// not acknowledged (no longer pending, or replayed).
	ids   [][]string
	acked int64
	// replayed are the indices of strict items refused as replays.
	replayed []int
	// marks are the sources the commit touched, where they stand now.
	marks []SourceMark
}

// runCommit runs commitScript. When the Bus waits for replicas, the
// script and the WAIT go out together (replicated); a commit the master
// ran and its replicas did not confirm returns its outcome with a
// *NotReplicatedError.
func (b *Bus) runCommit(ctx context.Context, stream, group string, items []scriptItem) (commitOutcome, error) {
	keys, argv := commitArgs(stream, group, items, b.waitToken())
	cmd, werr := b.runScript(ctx, commitScript, keys, argv...)
	res, err := cmd.Slice()
	if err != nil {
		return commitOutcome{}, err
	}
	return parseCommit(res, items), werr
}

// commitArgs are the keys and arguments of commitScript for items. The
// commit key (CommitKey) is named after the sig of the first chained add,
// else after token; with neither, there is none. A Bus that waits for
// replicas always gives a token: each run of the script then writes (its
// key, or the key's expiry on a rerun), which a WAIT needs.
func commitArgs(stream, group string, items []scriptItem, token string) (keys []string, argv []any) {
	keys = []string{stream}
	argv = []any{group, len(items), 0, 0, 0, 0}
	fallback := token
	token = ""
	forgets := false
	var sets []string // source set keys, in KEYS after the targets
	var setArgs []int // argv positions holding an index into sets
	for _, it := range items {
		forget := 0
		if it.forget {
			forget, forgets = 1, true
		}
		set, strict := 0, 0
		if it.mark.Source != "" {
			k := SeenKey(stream, group, it.mark.Source)
			set = slices.Index(sets, k)
			if set < 0 {
				sets = append(sets, k)
				set = len(sets) - 1
			}
			set++
			setArgs = append(setArgs, len(argv)+2)
			if it.strict {
				strict = 1
			}
		}
		argv = append(argv, it.id, forget, set, it.mark.Source, strconv.FormatUint(it.mark.Seq, 10), strict, len(it.adds))
		for _, a := range it.adds {
			k := slices.Index(keys[1:], a.stream)
			if k < 0 {
				keys = append(keys, a.stream)
				k = len(keys) - 1
			} else {
				k++
			}
			argv = append(argv, k+1, a.maxLen, len(a.fields)/2)
			argv = append(argv, a.fields...)
			if token == "" && a.env.Seq > 0 {
				token = a.env.Sig
			}
		}
	}
	argv[4] = len(keys)
	if forgets {
		keys = append(keys, AttemptsKey(stream))
		argv[2] = len(keys)
	}
	if len(sets) > 0 {
		keys = append(keys, SeqLowKey(stream, group))
		argv[3] = len(keys)
		base := len(keys)
		keys = append(keys, sets...)
		for _, pos := range setArgs {
			argv[pos] = argv[pos].(int) + base
		}
	}
	if token == "" {
		token = fallback
	}
	if token != "" {
		keys = append(keys, CommitKey(stream, token))
		argv[5] = len(keys)
	}
	return keys, argv
}

// CommitKey is the key by which a commit of chained adds remembers, for
// commitMemory, which of its adds it appended (and its acked count and
// replayed items), token being the sig of its
// first chained add: run again with the same arguments (go-redis retries a
// command whose reply was lost; a request can arrive late), it appends
// nothing and answers the same, so that no void is written for an add that
// is in its stream. A Bus that waits for replicas names a key for every
// commit, with a random token when it has no chained add (commitArgs):
// about 100 bytes per commit for commitMemory. It begins with stream's
// name (its hash tag).
func CommitKey(stream, token string) string { return stream + ":commit:" + token }

// commitMemory is how long a commit's key lives: beyond the Redis client's
// retry of the same request, which follows the first try's timeout. (A
// request that arrives later than this finds its entries acknowledged and
// appends nothing; its client, gone, writes no void.)
const commitMemory = 15 * time.Second

// parseCommit reads commitScript's reply.
func parseCommit(res []any, items []scriptItem) commitOutcome {
	var out commitOutcome
	out.acked, _ = res[0].(int64)
	raw, _ := res[1].([]any)
	out.ids = make([][]string, len(items))
	n := 0
	for i, it := range items {
		for range it.adds {
			if id, ok := raw[n].(string); ok {
				out.ids[i] = append(out.ids[i], id)
			}
			n++
		}
	}
	if len(res) > 3 {
		rep, _ := res[2].([]any)
		for _, r := range rep {
			if i, ok := r.(int64); ok {
				out.replayed = append(out.replayed, int(i)-1)
			}
		}
		ms, _ := res[3].([]any)
		for j := 0; j+2 < len(ms); j += 3 {
			src, _ := ms[j].(string)
			low, _ := ms[j+1].(int64)
			nxt, _ := ms[j+2].(int64)
			out.marks = append(out.marks, SourceMark{Source: src, Low: uint64(low), Next: uint64(nxt)})
		}
	}
	return out
}

// ReasonKind names why an entry was dead-lettered: one of the constants
// below or a verification reason (integrity.Reason: "signature_mismatch",
// "unknown_key_id", "malformed_envelope", "unsigned"). It is the metric
// label of a dead letter.
type ReasonKind string

// Reasons given by the processor.
const (
	// ReasonRejected: a plugin rejected the entry.
	ReasonRejected ReasonKind = "rejected"
	// ReasonMaxDeliveries: the entry failed its pipeline max_deliveries times.
	ReasonMaxDeliveries ReasonKind = "max_deliveries"
	// ReasonCrashedHost: the process died while running the entry, each
	// time, max_deliveries times.
	ReasonCrashedHost ReasonKind = "crashed_host"
)

// Reason says why an entry is dead-lettered.
type Reason struct {
	Kind ReasonKind
	// Detail, when not empty, is what a reader needs to know beyond Kind:
	// the plugin and its message, the delivery count.
	Detail string
}

// String is the reason as stored in the dead letter's reason field: Kind,
// then ": " and Detail when there is one.
func (r Reason) String() string {
	if r.Detail == "" {
		return string(r.Kind)
	}
	return string(r.Kind) + ": " + r.Detail
}

// Letter is an entry to move to a dead-letter stream.
type Letter struct {
	// ID is the entry's id in the source stream.
	ID string
	// Reason says why it is dead-lettered.
	Reason Reason
	// Deliveries is how many times it was delivered.
	Deliveries int64
	// KeyID is the key id the entry names, "" when it names none.
	KeyID string
	// Fields are the entry's fields as stored, as field, value pairs, in
	// stream order (a field named twice appears twice).
	Fields []any
	// Mark, when its Source is set, is recorded as settled with the dead
	// letter (seen.go), unless another entry holds it.
	Mark Mark
}

// Letter returns the dead letter of a verified entry.
func (e Entry) Letter(reason Reason) Letter {
	l := Letter{ID: e.ID, Reason: reason, Deliveries: e.Deliveries, KeyID: e.KeyID, Fields: e.Envelope().Values()}
	if reason.Kind != ReasonReplayed {
		l.Mark = e.Mark()
	}
	return l
}

// Mark is the entry's place in its source's sequence: the zero Mark for an
// envelope version 1 entry.
func (e Entry) Mark() Mark {
	if e.Source == "" {
		return Mark{}
	}
	return Mark{ID: e.ID, Source: e.Source, Seq: e.Seq}
}

// Letter returns the dead letter of an entry that failed verification, with
// its verification reason.
func (t Tampered) Letter() Letter {
	return RawEntry{ID: t.ID, Fields: t.Fields}.Letter(Reason{Kind: ReasonKind(t.Reason)}, t.Deliveries)
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
	// DeadLetterFieldsOmitted, present only on the letter of an entry of
	// more than MaxCopiedFields/2 fields, counts the fields not copied.
	DeadLetterFieldsOmitted = "fields_omitted"
)

// MaxCopiedFields is how many of an entry's field names and values a dead
// letter copies at most (the commit script appends an entry of at most
// about 8000 arguments).
const MaxCopiedFields = 4000

// DeadLetter appends each letter to the dead-letter stream dlq and
// acknowledges its id in group on stream, atomically and once: a letter whose
// entry is no longer pending (another consumer finished it) is skipped, and
// a failure writes nothing. It returns the new dead-letter entry ids, "" for
// a skipped letter. The dead-letter stream is never trimmed.
func (b *Bus) DeadLetter(ctx context.Context, stream, group, dlq string, letters ...Letter) ([]string, error) {
	if stream == "" || group == "" || dlq == "" {
		return nil, fmt.Errorf("%w: dead-letter needs stream, group and dead-letter stream", ErrInvalidArgs)
	}
	if len(letters) == 0 {
		return nil, nil
	}
	if b.chain != nil {
		b.writes.Lock()
		defer b.writes.Unlock()
	}
	items := make([]scriptItem, len(letters))
	for i, l := range letters {
		fields := []string{
			DeadLetterOriginalID, l.ID, DeadLetterOriginalStream, stream,
			DeadLetterReason, l.Reason.String(), DeadLetterDeliveries, strconv.FormatInt(l.Deliveries, 10),
			DeadLetterKeyID, l.KeyID,
		}
		copied := l.Fields
		if len(copied) > MaxCopiedFields {
			// A script cannot append a wider entry (Lua's unpack limit): the
			// letter keeps the first fields and says how many it omits.
			copied = copied[:MaxCopiedFields]
			fields = append(fields, DeadLetterFieldsOmitted, strconv.Itoa((len(l.Fields)-MaxCopiedFields)/2))
		}
		for j := 0; j+1 < len(copied); j += 2 {
			fields = append(fields, DeadLetterFieldPrefix+argString(copied[j]), argString(copied[j+1]))
		}
		add := scriptAdd{stream: dlq}
		if b.chain != nil {
			seal, link, err := b.chain.Seal(dlq, fields, time.Now())
			if err != nil {
				b.chainBroken(ctx, dlq, err) // letters before it may be signed
				return nil, fmt.Errorf("seal a dead letter for stream %q: %w", dlq, err)
			}
			fields = append(fields, seal...)
			add.env = integrity.Envelope{Sig: seal[len(seal)-1], Link: link}
		}
		add.fields = anys(fields)
		items[i] = scriptItem{id: l.ID, forget: true, mark: l.Mark, adds: []scriptAdd{add}}
	}
	out, err := b.runCommit(ctx, stream, group, items)
	added, acked := out.ids, out.acked
	if err != nil {
		b.voidUnconfirmed(ctx, items, out.ids, err)
		b.chainBroken(ctx, dlq, err)
		return nil, fmt.Errorf("dead-letter %d entries from stream %q group %q to %q: %w", len(letters), stream, group, dlq, err)
	}
	if b.chain != nil {
		b.voidSkipped(ctx, items, added)
		_ = b.checkpoint(ctx) // by count; errors are logged there
	}
	ids := make([]string, len(letters))
	for i, l := range letters {
		if len(added[i]) == 0 {
			continue // acknowledged elsewhere meanwhile: not this consumer's to move
		}
		ids[i] = added[i][0]
		b.log.LogAttrs(ctx, slog.LevelWarn, "message_dead_lettered",
			slog.String("stream", stream), slog.String("group", group), slog.String("entry_id", l.ID),
			slog.String("dead_letter_stream", dlq), slog.String("dead_letter_id", ids[i]),
			slog.String("reason", l.Reason.String()), slog.Int64("deliveries", l.Deliveries))
	}
	b.logAcked(ctx, stream, group, len(letters), acked)
	return ids, nil
}

// signAdd stamps (unless a.Stamped) and signs an Add, as the next link
// of the Bus's chain when it has one.
func (b *Bus) signAdd(a Add) (scriptAdd, error) {
	event := a.Event
	if !a.Stamped {
		stamped, _, err := integrity.Stamp(event, time.Now())
		if err != nil {
			return scriptAdd{}, fmt.Errorf("stamp event for stream %q: %w", a.Stream, err)
		}
		event = stamped
	}
	env, err := b.sign(a.Stream, event)
	if err != nil {
		return scriptAdd{}, err
	}
	add := scriptAdd{stream: a.Stream, maxLen: a.MaxLen, fields: env.Values()}
	if env.Chained() {
		add.env = env
	}
	return add, nil
}

// voidSkipped appends the void of each chained add that a commit did not
// append (its item was not acknowledged: finished elsewhere, or refused as
// a replay), so that the chain has no hole: a checkpoint at the add's seq
// that stands in for it (integrity.Chain.Void). A void is signed only now,
// once its entry is known to be missing, so that no void exists for an
// entry that was written. b.writes is held. Voids that cannot be written
// restart the chain (the hole then shows as a gap).
func (b *Bus) voidSkipped(ctx context.Context, items []scriptItem, ids [][]string) {
	var voids []integrity.StreamEnvelope
	for i, it := range items {
		if ids[i] != nil {
			continue // appended
		}
		for _, a := range it.adds {
			if a.env.Seq == 0 {
				continue
			}
			v, err := b.chain.Void(a.stream, a.env, time.Now())
			if err != nil {
				b.chainBroken(ctx, a.stream, err)
				return
			}
			voids = append(voids, integrity.StreamEnvelope{Stream: a.stream, Envelope: v})
			b.log.LogAttrs(ctx, slog.LevelInfo, "audit_chain_entry_voided",
				slog.String("stream", a.stream), slog.String("source", a.env.Source), slog.Uint64("seq", a.env.Seq),
				slog.String("entry_id", it.id),
				slog.String("detail", "the entry was not acknowledged here (finished elsewhere, or a replay): its emit is replaced by a void"))
		}
	}
	if err := b.writeCheckpoints(ctx, voids); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "audit_chain_void_not_written", slog.String("error", err.Error()))
	}
}

// voidUnconfirmed is voidSkipped for a commit that failed with err: when
// the master ran it and only its replicas did not confirm it
// (ErrNotReplicated), its outcome is known, and the links it skipped get
// their voids before the chain restarts, so that the old session has no
// hole before the links it did append. b.writes is held.
func (b *Bus) voidUnconfirmed(ctx context.Context, items []scriptItem, ids [][]string, err error) {
	if b.chain != nil && errors.Is(err, ErrNotReplicated) {
		b.voidSkipped(ctx, items, ids)
	}
}

// hasAdds says an item has events to append.
func hasAdds(items []Item) bool {
	for _, it := range items {
		if len(it.Adds) > 0 {
			return true
		}
	}
	return false
}

// argString is the string go-redis sends for a field name or value.
func argString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(v)
}

// anys returns strs as arguments of a command.
func anys(strs []string) []any {
	out := make([]any, len(strs))
	for i, s := range strs {
		out[i] = s
	}
	return out
}

// Add is an event to append to a stream in Commit.
type Add struct {
	Stream string
	// Event is stamped and signed for Stream, as in XAdd.
	Event []byte
	// MaxLen as in XAdd: 0 never trims.
	MaxLen int64
	// Stamped says Event already went through integrity.Stamp (a JSON
	// object with an event id and a timestamp): Commit signs it as it is
	// instead of checking and stamping it again.
	Stamped bool
}

// Item is one processed entry for Commit: its id, and the events its
// processing produced for other streams.
type Item struct {
	ID   string
	Adds []Add
	// Attempted says the entry has attempts on record (Entry.Attempts > 0):
	// the count is removed with the ack.
	Attempted bool
	// Mark, when its Source is set, is the chained entry's (source, seq),
	// recorded with the ack. An item whose mark another entry id holds (or
	// that is settled) is a replay: not acknowledged, nothing appended, and
	// listed in CommitResult.Replayed.
	Mark Mark
}

// CommitResult says what Commit did.
type CommitResult struct {
	// Acked is how many items were still pending and are now acknowledged.
	Acked int64
	// IDs holds, per item, the new entry ids of its Adds in order; nil for an
	// item that was already acknowledged, whose Adds were not appended.
	IDs [][]string
	// Replayed are the indices of the items refused as replays (see
	// Item.Mark): still pending, to be dead-lettered.
	Replayed []int
	// Marks say where each source of the items' marks stands now.
	Marks []SourceMark
}

// Commit acknowledges each item's entry in group on stream and appends its
// events, signed, to their streams — atomically, and at most once per entry:
// an item whose entry is no longer pending (a retried commit whose first
// reply was lost, or an entry another consumer claimed and finished) has
// nothing appended. A target that is not a stream fails the whole commit
// before anything is written. In Redis Cluster every stream involved must
// hash to one slot (use a hash tag such as "{audit}").
func (b *Bus) Commit(ctx context.Context, stream, group string, items ...Item) (CommitResult, error) {
	if stream == "" || group == "" {
		return CommitResult{}, fmt.Errorf("%w: commit needs stream and group", ErrInvalidArgs)
	}
	if len(items) == 0 {
		return CommitResult{}, nil
	}
	if b.chain != nil && hasAdds(items) {
		b.writes.Lock()
		defer b.writes.Unlock()
	}
	sealed := make([]scriptItem, len(items))
	nadds := 0
	for i, it := range items {
		if it.ID == "" {
			return CommitResult{}, fmt.Errorf("%w: commit item %d has no entry id", ErrInvalidArgs, i)
		}
		sealed[i].id, sealed[i].forget, sealed[i].mark, sealed[i].strict = it.ID, it.Attempted, it.Mark, true
		for j, a := range it.Adds {
			if a.Stream == "" || a.MaxLen < 0 {
				return CommitResult{}, fmt.Errorf("%w: commit item %d add %d needs a stream and a non-negative maxlen", ErrInvalidArgs, i, j)
			}
			add, err := b.signAdd(a)
			if err != nil {
				if nadds > 0 {
					b.chainBroken(ctx, stream, err) // the adds before it are signed
				}
				return CommitResult{}, err
			}
			sealed[i].adds = append(sealed[i].adds, add)
			nadds++
		}
	}
	out, err := b.runCommit(ctx, stream, group, sealed)
	if err != nil {
		if nadds > 0 {
			b.voidUnconfirmed(ctx, sealed, out.ids, err)
			b.chainBroken(ctx, stream, err)
		}
		return CommitResult{}, fmt.Errorf("commit %d entries with %d events on stream %q group %q: %w", len(items), nadds, stream, group, err)
	}
	if nadds > 0 && b.chain != nil {
		b.voidSkipped(ctx, sealed, out.ids)
		_ = b.checkpoint(ctx) // by count; errors are logged there
	}
	b.log.LogAttrs(ctx, slog.LevelDebug, "messages_committed",
		slog.String("stream", stream), slog.String("group", group),
		slog.Int("entries", len(items)), slog.Int64("acked", out.acked), slog.Int("events", nadds))
	return CommitResult{Acked: out.acked, IDs: out.ids, Replayed: out.replayed, Marks: out.marks}, nil
}
