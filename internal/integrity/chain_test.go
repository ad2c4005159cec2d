package integrity

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// verifyValues verifies an envelope's XADD values as a reader would.
func verifyValues(t *testing.T, k *Keyring, stream string, env Envelope) (Envelope, error) {
	t.Helper()
	var fields []string
	for _, v := range env.Values() {
		switch v := v.(type) {
		case string:
			fields = append(fields, v)
		case []byte:
			fields = append(fields, string(v))
		}
	}
	return k.VerifyFields(stream, fields)
}

func TestChainSignsInSequenceWithCheckpoints(t *testing.T) {
	k := testKeyring(t, "k1")
	c, err := NewChain(k, "svc", ChainConfig{CheckpointEvery: 3, CheckpointInterval: time.Minute})
	require.NoError(t, err)
	t0 := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	var got []Envelope
	for i := range 4 {
		env, err := c.Sign("s", stampedAt(t, i), t0)
		require.NoError(t, err)
		got = append(got, env)
		due, err := c.Due(t0)
		require.NoError(t, err)
		for _, d := range due {
			got = append(got, d.Envelope)
		}
	}
	// Other stream: a chain of its own.
	other, err := c.Sign("s2", stampedAt(t, 9), t0)
	require.NoError(t, err)
	assert.EqualValues(t, 1, other.Seq)

	require.Len(t, got, 5, "three events, a checkpoint, one more event")
	assert.True(t, got[3].IsCheckpoint())
	prev := ""
	for i, env := range got {
		assert.EqualValues(t, i+1, env.Seq)
		assert.Equal(t, prev, env.Prev)
		assert.Equal(t, c.Source(), env.Source)
		back, err := verifyValues(t, k, "s", env)
		require.NoError(t, err)
		assert.Equal(t, env.Link, back.Link)
		prev = env.Sig
	}

	// Idle: a checkpoint once the interval passed, on every stream.
	due, err := c.Due(t0.Add(59 * time.Second))
	require.NoError(t, err)
	assert.Empty(t, due)
	due, err = c.Due(t0.Add(time.Minute))
	require.NoError(t, err)
	assert.Len(t, due, 2)

	closing, err := c.Close(t0.Add(61 * time.Second))
	require.NoError(t, err)
	require.Len(t, closing, 2)
	for _, env := range closing {
		cp, err := ParseCheckpoint(env.Event)
		require.NoError(t, err)
		assert.True(t, cp.Closing)
		assert.Equal(t, env.Seq-1, cp.LastSeq)
		assert.Equal(t, env.Prev, cp.Head)
	}
	_, err = c.Sign("s", stampedAt(t, 10), t0)
	require.ErrorIs(t, err, ErrChainClosed)
}

func TestChainConcurrentSignersShareOneChain(t *testing.T) {
	k := testKeyring(t, "k1")
	c, err := NewChain(k, "svc", ChainConfig{})
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[uint64]Envelope{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				env, err := c.Sign("s", stampedAt(t, g*1000+i), time.Now())
				assert.NoError(t, err)
				mu.Lock()
				seen[env.Seq] = env
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 400)
	for seq := uint64(2); seq <= 400; seq++ {
		assert.Equal(t, seen[seq-1].Sig, seen[seq].Prev, "seq %d links to %d", seq, seq-1)
	}
}

func TestChainRestartStartsANewSession(t *testing.T) {
	k := testKeyring(t, "k1")
	c, err := NewChain(k, "svc", ChainConfig{})
	require.NoError(t, err)
	first := c.Source()
	_, err = c.Sign("s", stampedAt(t, 1), time.Now())
	require.NoError(t, err)
	c.Restart()
	assert.NotEqual(t, first, c.Source())
	env, err := c.Sign("s", stampedAt(t, 2), time.Now())
	require.NoError(t, err)
	assert.EqualValues(t, 1, env.Seq)
	_, err = NewChain(k, "bad name", ChainConfig{})
	require.ErrorIs(t, err, ErrInvalidEvent)
}

func stampedAt(t *testing.T, i int) []byte {
	t.Helper()
	out, _, err := Stamp(fmt.Appendf(nil, `{"i":%d}`, i), time.Now())
	require.NoError(t, err)
	return out
}

// TestChainAppendSignIsSign: the producers' arena fast path signs the same
// link, with the same signature, as Sign, and the chain goes on from it.
func TestChainAppendSignIsSign(t *testing.T) {
	k := testKeyring(t, "k1")
	c, err := NewChain(k, "svc", ChainConfig{CheckpointEvery: 2, CheckpointInterval: time.Minute})
	require.NoError(t, err)
	t0 := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	first, err := c.Sign("s", stampedAt(t, 0), t0)
	require.NoError(t, err)
	event := stampedAt(t, 1)
	arena := []byte("prefix")
	arena, link, err := c.AppendSign(arena, "s", event, t0)
	require.NoError(t, err)
	sig := string(arena[len("prefix"):])
	assert.Equal(t, Link{Source: first.Source, Seq: 2, Prev: first.Sig, Kind: KindEvent}, link)
	want, err := k.SignLink("s", link, event)
	require.NoError(t, err)
	assert.Equal(t, want.Sig, sig)
	env := Envelope{Version: Version2, KeyID: "k1", Event: event, Sig: sig, Link: link}
	_, err = verifyValues(t, k, "s", env)
	require.NoError(t, err)

	due, err := c.Due(t0)
	require.NoError(t, err)
	require.Len(t, due, 1, "2 entries: a checkpoint is due")
	assert.EqualValues(t, 3, due[0].Seq)
	assert.Equal(t, sig, due[0].Prev, "the checkpoint follows the fast path's link")

	_, err = c.Close(t0)
	require.NoError(t, err)
	_, _, err = c.AppendSign(nil, "s", stampedAt(t, 2), t0)
	require.ErrorIs(t, err, ErrChainClosed)
}
