package integrity

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

// Envelope version 2: a chain per source. Each producer instance (a
// source) numbers its entries per stream from 1 and signs, inside the MAC,
// its source id, the entry's sequence number and the signature of its
// previous entry on that stream, so that a reader can tell a deleted, a
// replayed and a reordered entry from a whole trail (docs/envelope.md).
const (
	// Version2 is the v field of a chained envelope.
	Version2 = "2"
	// FieldSource holds the source id: "<name>/<session>".
	FieldSource = "src"
	// FieldSeq holds the sequence number per (source, stream), from 1, in
	// decimal without leading zeros.
	FieldSeq = "seq"
	// FieldPrev holds the sig of the source's previous entry on the stream,
	// "" for sequence number 1.
	FieldPrev = "prev"
	// FieldKind says what the entry is: KindEvent or KindCheckpoint.
	FieldKind = "kind"

	// KindEvent is an audit event, delivered to plugins.
	KindEvent = "event"
	// KindCheckpoint is a source's signed checkpoint: never delivered to
	// plugins.
	KindCheckpoint = "checkpoint"

	// CheckpointMember is the top-level member of a checkpoint's event.
	CheckpointMember = "checkpoint"
)

// Defaults of ChainConfig.
const (
	// DefaultCheckpointEvery: a checkpoint after this many entries of a
	// source on a stream.
	DefaultCheckpointEvery = 1000
	// DefaultCheckpointInterval: a checkpoint at least this often, also
	// when the source wrote nothing since the last one.
	DefaultCheckpointInterval = 60 * time.Second
)

// ErrChainClosed is returned by Chain.Sign after Close.
var ErrChainClosed = errors.New("integrity: chain closed")

// Link is a version 2 entry's place in its source's chain.
type Link struct {
	// Source is the source id, "<name>/<session>".
	Source string
	// Seq is the entry's sequence number in (Source, stream), from 1.
	Seq uint64
	// Prev is the sig of the source's entry Seq-1 on the stream, "" for 1.
	Prev string
	// Kind is KindEvent or KindCheckpoint.
	Kind string
}

// IsCheckpoint says the entry is a checkpoint.
func (l Link) IsCheckpoint() bool { return l.Kind == KindCheckpoint }

// Checkpoint is what a checkpoint's event states about its source's chain
// on the stream, besides its own Link (whose Seq is LastSeq+1 and Prev
// Head).
type Checkpoint struct {
	// LastSeq is the sequence number of the source's last entry before the
	// checkpoint, Head that entry's sig ("" when LastSeq is 0).
	LastSeq uint64 `json:"last_seq"`
	Head    string `json:"head"`
	// Every and IntervalMS are the source's checkpoint policy: a reader
	// that sees no entry of a live source for longer than the interval
	// knows that entries are missing.
	Every      int   `json:"every"`
	IntervalMS int64 `json:"interval_ms"`
	// Closing marks the last entry of a source that stopped cleanly.
	Closing bool `json:"closing"`
	// Void, when set, makes the checkpoint a void: it stands in, at its
	// seq, for the entry whose sig Void is, which its writer signed but did
	// not append (Chain.SignVoidable). The source's next entry follows
	// Void.
	Void string `json:"void,omitempty"`
}

// ParseCheckpoint reads the checkpoint member of a checkpoint's event.
func ParseCheckpoint(event []byte) (Checkpoint, error) {
	cp := gjson.GetBytes(event, CheckpointMember)
	if !cp.IsObject() {
		return Checkpoint{}, malformed(FieldEvent, "checkpoint without a top-level checkpoint object")
	}
	m := cp.Map()
	last, head, every, interval, closing := m["last_seq"], m["head"], m["every"], m["interval_ms"], m["closing"]
	if last.Type != gjson.Number || head.Type != gjson.String || every.Type != gjson.Number ||
		interval.Type != gjson.Number || (closing.Type != gjson.True && closing.Type != gjson.False) {
		return Checkpoint{}, malformed(FieldEvent, "checkpoint needs last_seq, head, every, interval_ms (numbers, head a string) and closing (a boolean)")
	}
	c := Checkpoint{LastSeq: last.Uint(), Head: head.Str, Every: int(every.Int()), IntervalMS: interval.Int(), Closing: closing.Bool()}
	if strconv.FormatUint(c.LastSeq, 10) != last.Raw || c.Every < 0 || c.IntervalMS <= 0 {
		return Checkpoint{}, malformed(FieldEvent, "checkpoint numbers out of range")
	}
	if void, ok := m["void"]; ok {
		if void.Type != gjson.String || !isLowerHex(void.Str) || c.Closing {
			return Checkpoint{}, malformed(FieldEvent, fmt.Sprintf("a void names the sig it stands in for (%d lowercase hex digits) and does not close", sigHexLen))
		}
		c.Void = void.Str
	}
	return c, nil
}

// verifyChained verifies a version 2 envelope whose eight fields, and only
// those, are present (vals by envelopeField).
func (k *Keyring) verifyChained(stream string, vals [numFields]string) (Envelope, error) {
	link, err := parseLink(vals[fSource], vals[fSeq], vals[fPrev], vals[fKind])
	if err != nil {
		return Envelope{}, err
	}
	env, err := k.verifyCore(stream, vals[fKid], vals[fEvent], vals[fSig], &link)
	if err != nil || !link.IsCheckpoint() {
		return env, err
	}
	cp, err := ParseCheckpoint(env.Event)
	if err != nil {
		return Envelope{}, err
	}
	if cp.LastSeq != link.Seq-1 || cp.Head != link.Prev {
		return Envelope{}, malformed(FieldEvent, "checkpoint's last_seq and head are not its own seq-1 and prev")
	}
	return env, nil
}

// parseLink checks a version 2 entry's chain fields.
func parseLink(src, seq, prev, kind string) (Link, error) {
	if !ValidSourceID(src) {
		return Link{}, malformed(FieldSource, fmt.Sprintf("want <name>/<session>, each 1-%d characters of [A-Za-z0-9._-]", MaxKeyIDLen))
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 || seq[0] == '0' {
		return Link{}, malformed(FieldSeq, "want a decimal number from 1, without leading zeros")
	}
	if n == 1 && prev != "" {
		return Link{}, malformed(FieldPrev, "must be empty for seq 1")
	}
	if n > 1 && !isLowerHex(prev) {
		return Link{}, malformed(FieldPrev, fmt.Sprintf("want the previous entry's sig, %d lowercase hex digits", sigHexLen))
	}
	if kind != KindEvent && kind != KindCheckpoint {
		return Link{}, malformed(FieldKind, fmt.Sprintf("want %q or %q", KindEvent, KindCheckpoint))
	}
	return Link{Source: src, Seq: n, Prev: prev, Kind: kind}, nil
}

// SourceName makes s a valid source name: each character outside
// [A-Za-z0-9._-] becomes '-', and it is cut to 64 bytes; "" stays "".
func SourceName(s string) string {
	name := []byte(s)
	for i, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			name[i] = '-'
		}
	}
	return string(name[:min(len(name), MaxKeyIDLen)])
}

// ValidSourceID says s is "<name>/<session>", each part 1-64 characters of
// [A-Za-z0-9._-].
func ValidSourceID(s string) bool {
	name, session, ok := strings.Cut(s, "/")
	return ok && validKeyID(name) && validKeyID(session)
}

// mac2 computes a version 2 MAC into st.sum:
// HMAC-SHA256(key, LP(label) LP("2") LP(kid) LP(stream) LP(src) LP(seq)
// LP(prev) LP(kind) LP(event)).
func (e *keyEntry) mac2(st *macState, stream string, l *Link, event []byte) {
	st.h.Reset()
	st.h.Write(e.prefix2)
	st.writeLP(stringAsBytes(stream))
	st.writeLP(stringAsBytes(l.Source))
	var num [20]byte
	st.writeLP(strconv.AppendUint(num[:0], l.Seq, 10))
	st.writeLP(stringAsBytes(l.Prev))
	st.writeLP(stringAsBytes(l.Kind))
	st.writeLP(event)
	st.h.Sum(st.sum[:0])
}

// SignLink signs event for stream as version 2 at link with the active key.
// The event is checked as by Sign. It is the one signing function of every
// chained producer (Chain.Sign); it is exported for test vectors and for
// producers that keep their chain state themselves.
func (k *Keyring) SignLink(stream string, link Link, event []byte) (Envelope, error) {
	if _, err := parseLink(link.Source, strconv.FormatUint(link.Seq, 10), link.Prev, link.Kind); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	id, err := k.checkEvent(event)
	if err != nil {
		return Envelope{}, err
	}
	key := k.active
	st := key.pool.Get().(*macState)
	key.mac2(st, stream, &link, event)
	sig := hex.EncodeToString(st.sum[:])
	key.pool.Put(st)
	return Envelope{Version: Version2, KeyID: key.id, EventID: id, Event: event, Sig: sig, Link: link}, nil
}

// ChainConfig is a Chain's checkpoint policy.
type ChainConfig struct {
	// CheckpointEvery: a checkpoint after this many entries on a stream.
	// Default DefaultCheckpointEvery.
	CheckpointEvery int
	// CheckpointInterval: a checkpoint at least this often per stream
	// written to, also when nothing was written since. Default
	// DefaultCheckpointInterval.
	CheckpointInterval time.Duration
}

// Chain is one source's chains, one per stream: it signs entries in
// sequence and says when a checkpoint is due. Signing is serialised (one
// mutex); the caller may write the entries concurrently and in any order.
// A Chain is safe for concurrent use.
type Chain struct {
	keys *Keyring
	name string
	cfg  ChainConfig

	mu      sync.Mutex
	source  string
	streams map[string]*chainState
	closed  bool
}

type chainState struct {
	seq   uint64
	head  string
	since int       // entries since the last checkpoint
	last  time.Time // of the last checkpoint, or of the first entry
}

// NewChain returns the chain of a new session of the source name (1-64
// characters of [A-Za-z0-9._-]): its source id is name/<16 random hex
// digits>.
func NewChain(keys *Keyring, name string, cfg ChainConfig) (*Chain, error) {
	if !validKeyID(name) {
		return nil, fmt.Errorf("%w: source name %q: want 1-%d characters of [A-Za-z0-9._-]", ErrInvalidEvent, truncate(name), MaxKeyIDLen)
	}
	if cfg.CheckpointEvery < 0 || cfg.CheckpointInterval < 0 {
		return nil, fmt.Errorf("%w: negative checkpoint policy", ErrInvalidEvent)
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	c := &Chain{keys: keys, name: name, cfg: cfg}
	c.newSession()
	return c, nil
}

func (c *Chain) newSession() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	c.source = c.name + "/" + hex.EncodeToString(b[:])
	c.streams = map[string]*chainState{}
}

// Source returns the current source id.
func (c *Chain) Source() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.source
}

// Sign signs event (stamped, see Stamp) as the next entry of the chain on
// stream.
func (c *Chain) Sign(stream string, event []byte, now time.Time) (Envelope, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Envelope{}, ErrChainClosed
	}
	return c.next(stream, KindEvent, event, now)
}

// next signs the next link on stream. c.mu is held.
func (c *Chain) next(stream, kind string, event []byte, now time.Time) (Envelope, error) {
	st := c.state(stream, now)
	env, err := c.keys.SignLink(stream, Link{Source: c.source, Seq: st.seq + 1, Prev: st.head, Kind: kind}, event)
	if err != nil {
		return Envelope{}, err
	}
	st.advance(env.Sig, kind, now)
	return env, nil
}

// AppendSign is Sign's fast path for producers that keep envelopes in an
// arena: it appends to dst the hex signature of stamped as the next event
// of the chain on stream and returns it with the entry's link. stamped must
// have passed CheckEvent and AppendStamped (it is not checked again).
func (c *Chain) AppendSign(dst []byte, stream string, stamped []byte, now time.Time) ([]byte, Link, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return dst, Link{}, ErrChainClosed
	}
	st := c.state(stream, now)
	link := Link{Source: c.source, Seq: st.seq + 1, Prev: st.head, Kind: KindEvent}
	key := c.keys.active
	ms := key.pool.Get().(*macState)
	key.mac2(ms, stream, &link, stamped)
	start := len(dst)
	dst = hex.AppendEncode(dst, ms.sum[:])
	key.pool.Put(ms)
	st.advance(string(dst[start:]), KindEvent, now)
	return dst, link, nil
}

// state is stream's chain state, created at now. c.mu is held.
func (c *Chain) state(stream string, now time.Time) *chainState {
	st := c.streams[stream]
	if st == nil {
		st = &chainState{last: now}
		c.streams[stream] = st
	}
	return st
}

// advance records the link just signed.
func (st *chainState) advance(sig, kind string, now time.Time) {
	st.seq, st.head = st.seq+1, sig
	if kind == KindCheckpoint {
		st.since, st.last = 0, now
	} else {
		st.since++
	}
}

// Due returns the checkpoints due at now, signed, one per stream whose
// chain reached CheckpointEvery entries or CheckpointInterval since its
// last checkpoint (also with no entry since). The caller writes them.
func (c *Chain) Due(now time.Time) ([]StreamEnvelope, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil
	}
	var out []StreamEnvelope
	for stream, st := range c.streams {
		if st.since >= c.cfg.CheckpointEvery || now.Sub(st.last) >= c.cfg.CheckpointInterval {
			env, err := c.checkpoint(stream, false, now)
			if err != nil {
				return out, err
			}
			out = append(out, StreamEnvelope{Stream: stream, Envelope: env})
		}
	}
	return out, nil
}

// Close returns the closing checkpoint of every stream the chain wrote to
// and refuses further signing.
func (c *Chain) Close(now time.Time) ([]StreamEnvelope, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil
	}
	c.closed = true
	var out []StreamEnvelope
	for stream := range c.streams {
		env, err := c.checkpoint(stream, true, now)
		if err != nil {
			return out, err
		}
		out = append(out, StreamEnvelope{Stream: stream, Envelope: env})
	}
	return out, nil
}

// StreamEnvelope is an envelope signed for Stream.
type StreamEnvelope struct {
	Stream string
	Envelope
}

// Restart begins a new session (a new source id, sequence numbers from 1
// on every stream). A writer calls it when an append's outcome is unknown:
// the old session then ends without a closing checkpoint, which a reader
// reports, rather than with a hole in the middle of a chain.
func (c *Chain) Restart() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.newSession()
}

// checkpoint signs a checkpoint on stream. c.mu is held.
func (c *Chain) checkpoint(stream string, closing bool, now time.Time) (Envelope, error) {
	st := c.streams[stream]
	event := AppendCheckpointEvent(nil, c.source, st.seq+1, now, Checkpoint{
		LastSeq: st.seq, Head: st.head, Every: c.cfg.CheckpointEvery,
		IntervalMS: c.cfg.CheckpointInterval.Milliseconds(), Closing: closing,
	})
	return c.next(stream, KindCheckpoint, event, now)
}

// AppendCheckpointEvent appends the event of checkpoint seq of source: a
// JSON object with the event id "<source>#<seq>", the timestamp now and the
// checkpoint member.
func AppendCheckpointEvent(dst []byte, source string, seq uint64, now time.Time, cp Checkpoint) []byte {
	dst = append(dst, `{"event_id":"`...)
	dst = append(dst, source...)
	dst = append(dst, '#')
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `","timestamp":"`...)
	dst = now.UTC().AppendFormat(dst, TimestampLayout)
	dst = append(dst, `","checkpoint":{"last_seq":`...)
	dst = strconv.AppendUint(dst, cp.LastSeq, 10)
	dst = append(dst, `,"head":"`...)
	dst = append(dst, cp.Head...)
	dst = append(dst, `","every":`...)
	dst = strconv.AppendInt(dst, int64(cp.Every), 10)
	dst = append(dst, `,"interval_ms":`...)
	dst = strconv.AppendInt(dst, cp.IntervalMS, 10)
	dst = append(dst, `,"closing":`...)
	dst = strconv.AppendBool(dst, cp.Closing)
	if cp.Void != "" {
		dst = append(dst, `,"void":"`...)
		dst = append(dst, cp.Void...)
		dst = append(dst, '"')
	}
	return append(dst, "}}"...)
}
