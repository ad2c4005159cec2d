package integrity

import (
	"crypto/hmac"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// A sealed entry is an entry whose fields are not an envelope (a dead
// letter: metadata and a copy of the refused entry's raw fields) but that a
// chained writer signs all the same: the seal fields, appended last in this
// order, put the entry in the writer's chain on the stream. Its MAC is the
// version 2 MAC with the kind KindSealed and, as the event, every field
// before the seal as LP(name) LP(value) in stream order, so a repeated
// field, a reordered one or an added one breaks it (docs/envelope.md).
const (
	SealKeyID  = "seal.kid"
	SealSource = "seal.src"
	SealSeq    = "seal.seq"
	SealPrev   = "seal.prev"
	SealSig    = "seal.sig"

	// KindSealed is the kind inside a seal's MAC. It is never the kind field
	// of an envelope, so a seal's MAC cannot pass for an entry's.
	KindSealed = "sealed"

	// sealFieldCount is how many of an entry's fields (names and values)
	// the seal takes.
	sealFieldCount = 10
)

// sealNames are the seal's field names, in their order.
var sealNames = [5]string{SealKeyID, SealSource, SealSeq, SealPrev, SealSig}

// IsSealed says the entry's fields (name, value, …) end with a seal's sig
// field: whether it verifies is VerifySealed's to say.
func IsSealed(fields []string) bool {
	return len(fields) >= 2 && len(fields)%2 == 0 && fields[len(fields)-2] == SealSig
}

// appendSealBody appends the seal MAC's event: fields as LP(name) LP(value).
func appendSealBody(dst []byte, fields []string) []byte {
	for _, f := range fields {
		dst = appendLP(dst, f)
	}
	return dst
}

// sealLink signs the body of fields for stream at link (Kind KindSealed)
// with the active key and returns the seal's fields.
func (k *Keyring) sealLink(stream string, link Link, fields []string) []string {
	key := k.active
	st := key.pool.Get().(*macState)
	key.mac2(st, stream, &link, appendSealBody(nil, fields))
	sig := hex.EncodeToString(st.sum[:])
	key.pool.Put(st)
	return []string{SealKeyID, key.id, SealSource, link.Source, SealSeq, strconv.FormatUint(link.Seq, 10), SealPrev, link.Prev, SealSig, sig}
}

// VerifySealed verifies a sealed entry of stream: its last ten fields are
// the seal, in order, and the MAC covers every field before them. The
// returned Envelope has the seal's key id, sig and Link (Kind KindSealed,
// a link of its source's chain like any other) and no event.
func (k *Keyring) VerifySealed(stream string, fields []string) (Envelope, error) {
	if !IsSealed(fields) || len(fields) < sealFieldCount {
		return Envelope{}, malformed(SealSig, "not a sealed entry: the seal's fields must come last")
	}
	seal := fields[len(fields)-sealFieldCount:]
	for i, name := range sealNames {
		if seal[2*i] != name {
			return Envelope{}, malformed(name, fmt.Sprintf("missing: a seal is %q, last and in this order", sealNames))
		}
	}
	body := fields[:len(fields)-sealFieldCount]
	for i := 0; i < len(body); i += 2 {
		if len(body[i]) > 5 && body[i][:5] == "seal." {
			return Envelope{}, malformed(body[i], "seal field before the seal")
		}
	}
	kid, src, seq, prev, sig := seal[1], seal[3], seal[5], seal[7], seal[9]
	link, err := parseLink(src, seq, prev, KindEvent)
	if err != nil {
		return Envelope{}, err
	}
	link.Kind = KindSealed
	if !validKeyID(kid) {
		return Envelope{}, malformed(SealKeyID, fmt.Sprintf("want 1-%d characters of [A-Za-z0-9._-]", MaxKeyIDLen))
	}
	if !isLowerHex(sig) {
		return Envelope{}, malformed(SealSig, fmt.Sprintf("want %d lowercase hex digits", sigHexLen))
	}
	key, ok := k.keys[kid]
	if !ok {
		return Envelope{}, &EnvelopeError{Field: SealKeyID, Problem: fmt.Sprintf("no key %q in the keyring", kid), Err: ErrUnknownKeyID}
	}
	st := key.pool.Get().(*macState)
	_, _ = hex.Decode(st.sig[:], stringAsBytes(sig))
	key.mac2(st, stream, &link, appendSealBody(nil, body))
	equal := hmac.Equal(st.sum[:], st.sig[:])
	key.pool.Put(st)
	if !equal {
		return Envelope{}, &EnvelopeError{Field: SealSig, Problem: "not the MAC of this entry in this stream", Err: ErrSignatureMismatch}
	}
	return Envelope{Version: Version2, KeyID: key.id, Sig: sig, Link: link}, nil
}

// Seal puts fields (name, value, …), a sealed entry's body, as the next
// link of the chain on stream: it returns the seal's fields, to append
// after fields, and the entry's link.
func (c *Chain) Seal(stream string, fields []string, now time.Time) (seal []string, link Link, err error) {
	if len(fields)%2 != 0 {
		return nil, Link{}, fmt.Errorf("%w: sealed entry fields must be name, value pairs", ErrInvalidEvent)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, Link{}, ErrChainClosed
	}
	st := c.state(stream, now)
	link = Link{Source: c.source, Seq: st.seq + 1, Prev: st.head, Kind: KindSealed}
	seal = c.keys.sealLink(stream, link, fields)
	st.advance(seal[len(seal)-1], KindEvent, now)
	return seal, link, nil
}

// Void signs the void of entry, a link of this chain on stream that its
// writer did not append (a commit that found its entry acknowledged
// elsewhere): a checkpoint at the entry's seq whose Checkpoint.Void is the
// entry's sig, which the source's next entry follows. A writer signs a
// void only once it knows the entry is not in the stream, so that no void
// exists for an entry that is.
func (c *Chain) Void(stream string, entry Envelope, now time.Time) (Envelope, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if entry.Source != c.source || entry.Seq == 0 {
		return Envelope{}, fmt.Errorf("%w: a void is of an entry of the chain's current session", ErrInvalidEvent)
	}
	event := AppendCheckpointEvent(nil, c.source, entry.Seq, now, Checkpoint{
		LastSeq: entry.Seq - 1, Head: entry.Prev, Every: c.cfg.CheckpointEvery,
		IntervalMS: c.cfg.CheckpointInterval.Milliseconds(), Void: entry.Sig,
	})
	return c.keys.SignLink(stream, Link{Source: c.source, Seq: entry.Seq, Prev: entry.Prev, Kind: KindCheckpoint}, event)
}
