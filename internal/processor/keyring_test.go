package processor_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/streambus"
)

// foreignProducer is a chained source named name that signs with key bytes
// of its own under key id kid: "k" (the processor's key id, other bytes)
// makes entries that fail their signature, another id entries whose key
// the processor does not hold.
func (f *chainFixture) foreignProducer(t *testing.T, name, kid string) (*streambus.Bus, []byte) {
	t.Helper()
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring(kid, map[string][]byte{kid: key})
	require.NoError(t, err)
	b, err := streambus.New(streambus.Config{Source: name}, nil, f.rdb, keys)
	require.NoError(t, err)
	return b, key
}

// running starts r until the test ends (or the returned stop is called).
func running(t *testing.T, r *replica) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.p.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return stop
}

// countDead counts the dead letters whose reason starts with reason.
func countDead(dead map[string]string, reason string) int {
	n := 0
	for _, r := range dead {
		if strings.HasPrefix(r, reason) {
			n++
		}
	}
	return n
}

// TestKeyringMismatchStopsDeadLettering: when most new entries naming a key
// id the keyring holds fail their signature (the replica holds other bytes
// under that id), the processor logs keyring_mismatch_suspected, is not
// ready, and leaves those entries pending however often they are claimed;
// entries of a key id it does not hold are dead-lettered meanwhile as
// always. Once correctly signed entries bring the rate down, it logs
// keyring_mismatch_cleared, is ready again, and the entries left pending
// are verified again on their next claim (still forged here, so
// dead-lettered). A control: a few forged entries among many good ones are
// dead-lettered as before, with no suspicion.
func TestKeyringMismatchStopsDeadLettering(t *testing.T) {
	cfg := processor.Config{
		BatchSize: 100, MaxDeliveries: 1, Block: 50 * time.Millisecond,
		MinIdle: 50 * time.Millisecond, ReclaimInterval: 20 * time.Millisecond,
	}
	const wait, tick = time.Minute, 5 * time.Millisecond

	t.Run("mismatch", func(t *testing.T) {
		f := newChainFixture(t)
		var logs logBuffer
		logger := slog.New(slog.NewJSONHandler(&logs, nil))
		wrong, wrongKey := f.foreignProducer(t, "wrong-key", "k")
		unknown, unknownKey := f.foreignProducer(t, "unknown-key", "other")
		const forged, strangers = 30, 25
		for _, env := range f.seal(t, wrong, forged) {
			f.write(t, env, false)
		}
		for _, env := range f.seal(t, unknown, strangers) {
			f.write(t, env, false)
		}
		r := f.replica(t, "a", `{"sink":"seen"}`, cfg, logger)
		stop := running(t, r)
		suspected := r.metrics.KeyringMismatch.WithLabelValues("k")

		// Every forged entry is claimed again and again past its delivery
		// budget (1): each claim would have dead-lettered it. The entries
		// of the unknown key id are dead-lettered on their first claim.
		require.Eventually(t, func() bool {
			return testutil.ToFloat64(r.metrics.Reclaimed) >= strangers+3*forged && len(f.deadLetters(t)) >= strangers
		}, wait, tick, "the refused entries are claimed repeatedly")
		dead := f.deadLetters(t)
		assert.Len(t, dead, strangers, "only the entries of the unknown key id are dead-lettered")
		assert.Equal(t, strangers, countDead(dead, "unknown_key_id"))
		assert.EqualValues(t, forged, f.pending(t), "the forged entries stay pending")
		assert.False(t, r.p.Ready(), "not ready while a keyring mismatch is suspected")
		assert.Contains(t, r.p.NotReadyReason(), "keyring mismatch suspected for key id k")
		assert.Zero(t, testutil.ToFloat64(r.metrics.Ready), "auditproc_ready")
		assert.InDelta(t, 1, testutil.ToFloat64(suspected), 0, "auditproc_keyring_mismatch_suspected{key_id=\"k\"}")
		assert.Empty(t, f.saw(t), "no refused entry reached the plugin")
		lines := logs.lines(t, "keyring_mismatch_suspected")
		require.Len(t, lines, 1, "logged once")
		assert.Equal(t, "k", lines[0]["key_id"])
		assert.EqualValues(t, forged, lines[0]["failures"])
		assert.EqualValues(t, forged, lines[0]["window"])
		assert.Empty(t, logs.lines(t, "keyring_mismatch_cleared"))

		// Correctly signed entries arrive: the rate drops below half.
		good := f.producer(t, "good")
		const fine = 40
		for _, env := range f.seal(t, good, fine) {
			f.write(t, env, false)
		}
		require.Eventually(t, func() bool {
			return r.p.Ready() && len(f.saw(t)) == fine && len(f.deadLetters(t)) == strangers+forged && f.pending(t) == 0
		}, wait, tick, "cleared: the good entries are processed, the forged ones dead-lettered on their next claim")
		assert.Empty(t, r.p.NotReadyReason())
		assert.InDelta(t, 1, testutil.ToFloat64(r.metrics.Ready), 0, "auditproc_ready")
		stop()
		assert.Zero(t, testutil.ToFloat64(suspected), "auditproc_keyring_mismatch_suspected{key_id=\"k\"}")
		cleared := logs.lines(t, "keyring_mismatch_cleared")
		require.Len(t, cleared, 1)
		assert.Equal(t, "k", cleared[0]["key_id"])
		assert.Len(t, logs.lines(t, "keyring_mismatch_suspected"), 1, "not suspected again")
		dead = f.deadLetters(t)
		assert.Equal(t, forged, countDead(dead, "signature_mismatch"))
		assert.Equal(t, strangers, countDead(dead, "unknown_key_id"))

		// No key material in the log.
		logs.mu.Lock()
		all := logs.b.String()
		logs.mu.Unlock()
		for _, key := range [][]byte{wrongKey, unknownKey} {
			assert.NotContains(t, all, hex.EncodeToString(key))
			assert.NotContains(t, all, base64.StdEncoding.EncodeToString(key))
		}
	})

	t.Run("control", func(t *testing.T) {
		f := newChainFixture(t)
		var logs logBuffer
		logger := slog.New(slog.NewJSONHandler(&logs, nil))
		wrong, _ := f.foreignProducer(t, "wrong-key", "k")
		good := f.producer(t, "good")
		goodEnvs := f.seal(t, good, 100)
		forgedEnvs := f.seal(t, wrong, 5)
		for i, env := range goodEnvs {
			f.write(t, env, false)
			if i%20 == 10 {
				f.write(t, forgedEnvs[i/20], false)
			}
		}
		cfg := cfg
		cfg.StopWhenIdle = true
		r := f.replica(t, "a", `{"sink":"seen"}`, cfg, logger)
		drain(t, r)

		dead := f.deadLetters(t)
		assert.Len(t, dead, 5)
		assert.Equal(t, 5, countDead(dead, "signature_mismatch"), "the forged entries are dead-lettered")
		assert.Len(t, f.saw(t), 100)
		assert.Zero(t, f.pending(t))
		assert.Empty(t, logs.lines(t, "keyring_mismatch_suspected"))
		assert.Zero(t, testutil.ToFloat64(r.metrics.KeyringMismatch.WithLabelValues("k")))
	})
}
