package streambus

import (
	"github.com/auditproc/auditproc/internal/integrity"
)

// Fields of a withdrawal: the sealed record that `auditproc dlq replay`
// appends to the dead-letter stream before it deletes a sealed dead letter
// it replayed, so that the deletion is accounted for in the letter's chain
// (a reader links the withdrawal in the letter's place) instead of showing
// as a gap.
const (
	// WithdrawnID is the dead letter's entry id.
	WithdrawnID = "withdrawn_id"
	// WithdrawnSource, WithdrawnSeq, WithdrawnPrev and WithdrawnSig are
	// the dead letter's seal.
	WithdrawnSource = "withdrawn_src"
	WithdrawnSeq    = "withdrawn_seq"
	WithdrawnPrev   = "withdrawn_prev"
	WithdrawnSig    = "withdrawn_sig"
	// ReplayedAs is where the letter's entry went: "<stream> <entry id>".
	ReplayedAs = "replayed_as"
)

// Value is the first value of the field name, "" when the entry has none.
func (e RawEntry) Value(name string) string {
	for i := 0; i+1 < len(e.Fields); i += 2 {
		if e.Fields[i] == name {
			return e.Fields[i+1]
		}
	}
	return ""
}

// IsDeadLetter says the entry of a dead-letter stream is a dead letter,
// not a checkpoint or a withdrawal of its writers' chains.
func (e RawEntry) IsDeadLetter() bool {
	for i := 0; i < len(e.Fields); i += 2 {
		if e.Fields[i] == DeadLetterOriginalID {
			return true
		}
	}
	return false
}

// Withdrawal returns the fields of the withdrawal of the sealed dead letter
// e, replayed as replayedAs; false when e is not sealed (a letter written
// without a chain is deleted without one).
func (e RawEntry) Withdrawal(replayedAs string) ([]string, bool) {
	if !integrity.IsSealed(e.Fields) || len(e.Fields) < 10 {
		return nil, false
	}
	// The seal is the last ten fields: kid, src, seq, prev, sig.
	seal := e.Fields[len(e.Fields)-10:]
	return []string{
		WithdrawnID, e.ID,
		WithdrawnSource, seal[3], WithdrawnSeq, seal[5], WithdrawnPrev, seal[7], WithdrawnSig, seal[9],
		ReplayedAs, replayedAs,
	}, true
}
