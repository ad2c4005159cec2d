package integrity

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSealedEntry: a sealed entry verifies as the writer's next link; any
// field added, removed, changed or moved, a seal on another stream or a
// seal not last is refused; its void stands at the same seq, naming its
// sig, and only an entry of the chain's current session has one.
func TestSealedEntry(t *testing.T) {
	k := testKeyring(t, "k1")
	c, err := NewChain(k, "run.a", ChainConfig{})
	require.NoError(t, err)
	now := time.Now()
	_, err = c.Sign("dlq", []byte(`{"event_id":"e1","timestamp":"2026-01-01T00:00:00Z"}`), now)
	require.NoError(t, err)
	body := []string{"original_id", "1-1", "reason", "rejected", "entry.event", `{"a":1}`, "entry.event", `{"a":2}`}
	seal, link, err := c.Seal("dlq", body, now)
	require.NoError(t, err)
	fields := append(slices.Clone(body), seal...)
	env, err := k.VerifySealed("dlq", fields)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), env.Seq)
	assert.Equal(t, KindSealed, env.Kind)
	assert.Equal(t, link, env.Link)
	assert.True(t, IsSealed(fields))

	void, err := c.Void("dlq", env, now)
	require.NoError(t, err)
	cp, err := ParseCheckpoint(void.Event)
	require.NoError(t, err)
	assert.Equal(t, env.Sig, cp.Void)
	assert.Equal(t, env.Seq, void.Seq)
	_, err = k.VerifyFields("dlq", toStrings(void.Values()))
	require.NoError(t, err, "a void is a valid checkpoint")

	bad := map[string][]string{
		"value changed":              slices.Replace(slices.Clone(fields), 3, 4, "max_deliveries"),
		"field removed":              slices.Delete(slices.Clone(fields), 6, 8),
		"field added":                slices.Insert(slices.Clone(fields), 0, "x", "y"),
		"fields moved":               append(append(slices.Clone(body[2:4]), body[0:2]...), append(slices.Clone(body[4:]), seal...)...),
		"seal field before the seal": slices.Insert(slices.Clone(fields), 0, SealSeq, "9"),
		"seq changed":                slices.Replace(slices.Clone(fields), len(fields)-5, len(fields)-4, "3"),
	}
	for name, f := range bad {
		_, err := k.VerifySealed("dlq", f)
		assert.Error(t, err, name)
	}
	_, err = k.VerifySealed("other", fields)
	assert.ErrorIs(t, err, ErrSignatureMismatch, "bound to its stream")

	next, err := c.Sign("dlq", []byte(`{"event_id":"e3","timestamp":"2026-01-01T00:00:00Z"}`), now)
	require.NoError(t, err)
	assert.Equal(t, env.Sig, next.Prev, "the chain follows the sealed entry")
	c.Restart()
	_, err = c.Void("dlq", env, now)
	assert.Error(t, err, "not of the current session")
}

// FuzzVerifySealed: whatever the fields, VerifySealed returns a
// verification error or an entry whose seal is the MAC of its body.
func FuzzVerifySealed(f *testing.F) {
	k := testKeyring(f, "k1")
	c, err := NewChain(k, "run.a", ChainConfig{})
	require.NoError(f, err)
	body := []string{"original_id", "1-1", "entry.event", `{"a":1}`}
	seal, _, err := c.Seal("dlq", body, time.Now())
	require.NoError(f, err)
	f.Add("original_id", "1-1", seal[3], seal[5], seal[7], seal[9], uint8(0))
	f.Fuzz(func(t *testing.T, name, value, src, seq, prev, sig string, twist uint8) {
		fields := []string{name, value, SealKeyID, "k1", SealSource, src, SealSeq, seq, SealPrev, prev, SealSig, sig}
		switch twist % 3 {
		case 1:
			fields = fields[2:]
		case 2:
			fields = append(fields, "x")
		}
		env, err := k.VerifySealed("dlq", fields)
		if err != nil {
			require.Contains(t, []string{"signature_mismatch", "unknown_key_id", "malformed_envelope"}, Reason(err), "%v", err)
			return
		}
		assert.Equal(t, sig, env.Sig)
		assert.Equal(t, KindSealed, env.Kind)
		again := k.sealLink("dlq", env.Link, fields[:len(fields)-sealFieldCount])
		assert.Equal(t, sig, again[len(again)-1])
	})
}

// toStrings returns an envelope's Values as stored strings.
func toStrings(values []any) []string {
	out := make([]string, len(values))
	for i, v := range values {
		switch v := v.(type) {
		case []byte:
			out[i] = string(v)
		case string:
			out[i] = v
		}
	}
	return out
}
