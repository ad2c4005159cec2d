package processor

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// A wrong key is not an attack. When most of the entries that name a key id
// the keyring holds fail their signature, the likelier cause is that this
// replica holds other bytes under that id (a rotated or mistyped key), not
// that most of the producers' entries are forged. Dead-lettering them all
// would empty the stream into the dead-letter stream; instead the processor
// suspects a keyring mismatch for that key id: it logs
// keyring_mismatch_suspected, is not ready (/readyz, auditproc_ready), and
// leaves that key id's signature_mismatch entries pending (never handed to
// a plugin) until the rate drops. The reclaimer then brings them back and
// they are verified again: with the right keyring they are processed, and
// entries still forged are dead-lettered as usual.
const (
	// mismatchWindow is how many of a key id's latest new entries count.
	mismatchWindow = 100
	// mismatchMinSample is how many of them a suspicion needs.
	mismatchMinSample = 20
)

// keyWatch holds, per key id the keyring holds, the signature outcomes of
// its latest new entries (read with ">", not redeliveries: an entry left
// pending and claimed again would count again and again) and whether a
// mismatch is suspected. It is bounded by the keyring: an entry whose key id
// the keyring does not hold is unknown_key_id, never signature_mismatch.
type keyWatch struct {
	mu        sync.Mutex
	keys      map[string]*outcomeWindow
	suspected map[string]bool
}

// outcomeWindow is a ring of the latest outcomes of one key id.
type outcomeWindow struct {
	failed   [mismatchWindow]bool
	next, n  int
	failures int
}

func (w *outcomeWindow) add(failed bool) {
	if w.n == mismatchWindow {
		if w.failed[w.next] {
			w.failures--
		}
	} else {
		w.n++
	}
	w.failed[w.next] = failed
	if failed {
		w.failures++
	}
	w.next = (w.next + 1) % mismatchWindow
}

// mostFail reports whether most outcomes of the window failed, with enough
// of them to tell.
func (w *outcomeWindow) mostFail() bool {
	return w.n >= mismatchMinSample && 2*w.failures > w.n
}

// keyChange is a key id entering or leaving the suspected state.
type keyChange struct {
	keyID       string
	suspected   bool
	failures, n int
}

// observe records a batch of new entries and returns the key ids whose
// state changed.
func (k *keyWatch) observe(b streambus.Batch) []keyChange {
	k.mu.Lock()
	defer k.mu.Unlock()
	// A batch names few key ids, mostly one: the last one's window is
	// kept at hand.
	var touched []string
	var last string
	var lastW *outcomeWindow
	add := func(kid string, failed bool) {
		if lastW == nil || kid != last {
			w := k.keys[kid]
			if w == nil {
				if k.keys == nil {
					k.keys = map[string]*outcomeWindow{}
				}
				w = &outcomeWindow{}
				k.keys[kid] = w
			}
			if !slices.Contains(touched, kid) {
				touched = append(touched, kid)
			}
			last, lastW = kid, w
		}
		lastW.add(failed)
	}
	for _, list := range [][]streambus.Entry{b.Entries, b.Checkpoints} {
		for _, e := range list {
			if e.KeyID != "" {
				add(e.KeyID, false)
			}
		}
	}
	for _, t := range b.Tampered {
		if kid := tamperedKeyID(t); kid != "" && t.Reason == signatureMismatch {
			add(kid, true)
		}
	}
	var changes []keyChange
	for _, kid := range touched {
		w := k.keys[kid]
		if now := w.mostFail(); now != k.suspected[kid] {
			if now {
				if k.suspected == nil {
					k.suspected = map[string]bool{}
				}
				k.suspected[kid] = true
			} else {
				delete(k.suspected, kid)
			}
			changes = append(changes, keyChange{keyID: kid, suspected: now, failures: w.failures, n: w.n})
		}
	}
	slices.SortFunc(changes, func(a, b keyChange) int { return strings.Compare(a.keyID, b.keyID) })
	return changes
}

// holds reports whether t is a signature mismatch of a key id under
// suspicion: such an entry stays pending.
func (k *keyWatch) holds(t streambus.Tampered) bool {
	if t.Reason != signatureMismatch {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.suspected[tamperedKeyID(t)]
}

// suspects returns the key ids under suspicion, sorted.
func (k *keyWatch) suspects() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ids := make([]string, 0, len(k.suspected))
	for kid := range k.suspected {
		ids = append(ids, kid)
	}
	slices.Sort(ids)
	return ids
}

// suspecting reports whether some key id is under suspicion.
func (k *keyWatch) suspecting() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.suspected) > 0
}

var signatureMismatch = integrity.Reason(integrity.ErrSignatureMismatch)

// tamperedKeyID is the key id a refused entry names: its first kid field.
func tamperedKeyID(t streambus.Tampered) string {
	for i := 0; i+1 < len(t.Fields); i += 2 {
		if t.Fields[i] == integrity.FieldKeyID {
			return t.Fields[i+1]
		}
	}
	return ""
}

// watchKeys records the signature outcomes of a batch of new entries and
// reports the key ids that entered or left suspicion: the log, the gauge
// per key id and readiness.
func (p *Processor) watchKeys(ctx context.Context, b streambus.Batch) {
	changes := p.keyWatch.observe(b)
	if len(changes) == 0 {
		return
	}
	for _, c := range changes {
		attrs := []slog.Attr{
			slog.String("key_id", c.keyID), slog.String("stream", p.cfg.Stream),
			slog.Int("failures", c.failures), slog.Int("window", c.n),
		}
		if c.suspected {
			p.metrics.KeyringMismatch.WithLabelValues(c.keyID).Set(1)
			p.log.LogAttrs(ctx, slog.LevelError, "keyring_mismatch_suspected", append(attrs,
				slog.String("detail", "most entries naming this key id fail their signature: this replica likely holds other key bytes under this id; "+
					"its refused entries stay pending (not dead-lettered, never run) and /readyz fails until the rate drops. Check the keyring file"))...)
		} else {
			p.metrics.KeyringMismatch.WithLabelValues(c.keyID).Set(0)
			p.log.LogAttrs(ctx, slog.LevelInfo, "keyring_mismatch_cleared", append(attrs,
				slog.String("detail", "most entries naming this key id verify again; entries left pending are verified again when reclaimed"))...)
		}
	}
	p.readyMu.Lock()
	p.publishReady()
	p.readyMu.Unlock()
}
