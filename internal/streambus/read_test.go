package streambus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

func TestReadRejectsTampered(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	signed := f.add(t, 2)
	tamperedID := f.tamper(t, signed[0])
	unsignedID := f.rawAdd(t, f.stream, "event", `{"event_id":"x","action":"rm -rf"}`)
	last := f.add(t, 1)

	b := readAll(t, f.bus, f.stream)
	assert.Equal(t, []string{signed[0].ID, signed[1].ID, last[0].ID}, ids(b.Entries), "only verified entries are returned")
	require.Len(t, b.Tampered, 2)
	assert.Equal(t, tamperedID, b.Tampered[0].ID)
	assert.Equal(t, "signature_mismatch", b.Tampered[0].Reason)
	require.ErrorIs(t, b.Tampered[0].Err, integrity.ErrSignatureMismatch)
	assert.Equal(t, unsignedID, b.Tampered[1].ID)
	assert.Equal(t, "unsigned", b.Tampered[1].Reason)
	assert.Equal(t, map[string]uint64{"signature_mismatch": 1, "unsigned": 1}, f.bus.TamperedCounts())

	logs := f.logs.lines(t, "security_audit_tampered_message")
	require.Len(t, logs, 2)
	assert.Equal(t, tamperedID, logs[0]["entry_id"])
	assert.Equal(t, f.stream, logs[0]["stream"])
	assert.Equal(t, "signature_mismatch", logs[0]["reason"])
	assert.Equal(t, "WARN", logs[0]["level"])
	assert.Equal(t, unsignedID, logs[1]["entry_id"])
	assert.Equal(t, "unsigned", logs[1]["reason"])
}

func TestXReadGroup(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 4)

	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Count: 3})
	require.NoError(t, err)
	assert.Equal(t, ids(added[:3]), ids(b.Entries))
	for i, e := range b.Entries {
		assert.EqualValues(t, 1, e.Deliveries)
		assert.Equal(t, added[i].Event, e.Event)
	}

	// The next read acknowledges the first batch in the same round trip.
	b2, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Ack: ids(b.Entries)})
	require.NoError(t, err)
	assert.EqualValues(t, 3, b2.Acked)
	assert.Equal(t, ids(added[3:]), ids(b2.Entries))

	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p.Count, "the first batch is acknowledged, the second pending")

	// History: the consumer's own pending entries, with delivery counts.
	h, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", ID: "0"})
	require.NoError(t, err)
	assert.Equal(t, ids(added[3:]), ids(h.Entries))
	assert.EqualValues(t, 2, h.Entries[0].Deliveries)
	assert.Equal(t, added[3].ID, h.Cursor)

	h, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c2", ID: "0"})
	require.NoError(t, err)
	assert.Zero(t, h.Len(), "another consumer has no pending entries")

	logs := f.logs.lines(t, "consumer_messages_read")
	require.NotEmpty(t, logs)
	assert.Equal(t, "DEBUG", logs[0]["level"])
	assert.NotEmpty(t, f.logs.lines(t, "messages_acknowledged"))
}

func TestXReadGroupRejectsTampered(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	signed := f.add(t, 1)
	bad := f.tamper(t, signed[0])
	malformed := f.rawAdd(t, f.stream, "v", "1", "kid", "k1", "event", "{}", "sig", "zz")

	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1"})
	require.NoError(t, err)
	assert.Equal(t, ids(signed), ids(b.Entries))
	require.Len(t, b.Tampered, 2)
	assert.Equal(t, bad, b.Tampered[0].ID)
	assert.EqualValues(t, 1, b.Tampered[0].Deliveries)
	assert.Equal(t, "malformed_envelope", b.Tampered[1].Reason)
	assert.Equal(t, map[string]uint64{"signature_mismatch": 1, "malformed_envelope": 1}, f.bus.TamperedCounts())

	logs := f.logs.lines(t, "security_audit_tampered_message")
	require.Len(t, logs, 2)
	assert.Equal(t, bad, logs[0]["entry_id"])
	assert.Equal(t, malformed, logs[1]["entry_id"])
	assert.Equal(t, "c1", logs[0]["consumer"])

	// Acknowledge what was delivered as verified, as a consumer would.
	n, err := f.bus.XAck(ctx, f.stream, f.group, ids(b.Entries)...)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n)
	assert.Equal(t, []string{bad, malformed}, f.pendingIDs(t), "tampered entries stay pending")

	// Re-read from history: still rejected, with the delivery count.
	h, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", ID: "0"})
	require.NoError(t, err)
	assert.Empty(t, h.Entries)
	require.Len(t, h.Tampered, 2)
	assert.EqualValues(t, 2, h.Tampered[0].Deliveries)
}

func TestXReadGroupHistoryReportsDeleted(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 3)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1"})
	require.NoError(t, err)
	require.NoError(t, f.rdb.XDel(ctx, f.stream, added[1].ID).Err())

	h, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", ID: "0"})
	require.NoError(t, err)
	assert.Equal(t, []string{added[0].ID, added[2].ID}, ids(h.Entries))
	assert.Equal(t, []string{added[1].ID}, h.Deleted)
	assert.Equal(t, added[2].ID, h.Cursor)
}

func TestXReadGroupErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("no group", func(t *testing.T) {
		f := newFixture(t, streambus.Config{})
		f.add(t, 1)
		_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: "missing", Consumer: "c"})
		require.Error(t, err)
		assert.True(t, redis.HasErrorPrefix(errors.Unwrap(err), "NOGROUP"), "%v", err)
	})
	t.Run("ack refused", func(t *testing.T) {
		f := newFixtureOn(t, limitedClient(t, "xack"), streambus.Config{})
		f.createGroup(t, "0")
		f.add(t, 1)
		_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Ack: []string{"1-0"}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "xack")
	})
	t.Run("delivery counts refused", func(t *testing.T) {
		f := newFixtureOn(t, limitedClient(t, "xpending"), streambus.Config{})
		f.createGroup(t, "0")
		f.add(t, 1)
		_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
		require.NoError(t, err)
		_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", ID: "0"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "delivery counts")
	})
}

func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, streambus.Config{})
	k1, err := integrity.GenerateKey()
	require.NoError(t, err)
	k2, err := integrity.GenerateKey()
	require.NoError(t, err)
	busWith := func(active string, keys map[string][]byte) *streambus.Bus {
		kr, err := integrity.NewKeyring(active, keys)
		require.NoError(t, err)
		bus, err := streambus.New(streambus.Config{}, nil, f.rdb, kr)
		require.NoError(t, err)
		return bus
	}
	before := busWith("k1", map[string][]byte{"k1": k1})
	rotated := busWith("k2", map[string][]byte{"k1": k1, "k2": k2})

	old, err := before.XAdd(ctx, f.stream, event(1), 0)
	require.NoError(t, err)
	fresh, err := rotated.XAdd(ctx, f.stream, event(2), 0)
	require.NoError(t, err)
	assert.Equal(t, "k2", fresh.KeyID)

	b := readAll(t, rotated, f.stream)
	assert.Equal(t, []string{old.ID, fresh.ID}, ids(b.Entries), "the old key still verifies")
	assert.Empty(t, b.Tampered)

	// A reader that does not hold k2 rejects the new entry as unknown key.
	b = readAll(t, before, f.stream)
	assert.Equal(t, []string{old.ID}, ids(b.Entries))
	require.Len(t, b.Tampered, 1)
	assert.Equal(t, fresh.ID, b.Tampered[0].ID)
	assert.Equal(t, "unknown_key_id", b.Tampered[0].Reason)
	require.ErrorIs(t, b.Tampered[0].Err, integrity.ErrUnknownKeyID)
}

func TestReplayIntoOtherStreamRejected(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	orig := f.add(t, 1)[0]
	other := uniqueName(t, "other")
	replayed := f.rawAdd(t, other, orig.Envelope().Values()...)

	b := readAll(t, f.bus, other)
	assert.Empty(t, b.Entries)
	require.Len(t, b.Tampered, 1)
	assert.Equal(t, replayed, b.Tampered[0].ID)
	assert.Equal(t, "signature_mismatch", b.Tampered[0].Reason, "the signature binds the stream name")
}

func TestBlockingReadsAreFinite(t *testing.T) {
	f := newFixture(t, streambus.Config{Block: 400 * time.Millisecond})
	f.createGroup(t, "$")
	reads := map[string]func(ctx context.Context, block time.Duration) (streambus.Batch, error){
		"xreadgroup": func(ctx context.Context, block time.Duration) (streambus.Batch, error) {
			return f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Block: block})
		},
	}
	for name, read := range reads {
		t.Run(name+" zero block uses the default", func(t *testing.T) {
			start := time.Now()
			b, err := read(context.Background(), 0)
			require.NoError(t, err)
			assert.Zero(t, b.Len())
			took := time.Since(start)
			assert.GreaterOrEqual(t, took, 400*time.Millisecond)
			assert.Less(t, took, 2*time.Second)
		})
		t.Run(name+" negative block does not wait", func(t *testing.T) {
			start := time.Now()
			_, err := read(context.Background(), -1)
			require.NoError(t, err)
			assert.Less(t, time.Since(start), 150*time.Millisecond)
		})
		t.Run(name+" cancellation stops a long block promptly", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			start := time.Now()
			_, err := read(ctx, time.Minute)
			require.ErrorIs(t, err, context.Canceled)
			assert.Less(t, time.Since(start), 600*time.Millisecond)
		})
	}
}

// TestXReadGroupRESP2 runs the group read on a client speaking RESP2, whose
// replies the bus parses itself as well as RESP3's (go-redis's default).
func TestXReadGroupRESP2(t *testing.T) {
	opts := redistest.Shared(t).Options()
	opts.Protocol = 2
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	f := newFixtureOn(t, rdb, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 3)
	bad := f.tamper(t, added[0])

	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1"})
	require.NoError(t, err)
	assert.Equal(t, added, withoutDeliveries(b.Entries))
	require.Len(t, b.Tampered, 1)
	assert.Equal(t, bad, b.Tampered[0].ID)

	require.NoError(t, f.rdb.XDel(ctx, f.stream, added[1].ID).Err())
	h, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", ID: "0", Ack: ids(added[:1])})
	require.NoError(t, err)
	assert.EqualValues(t, 1, h.Acked)
	assert.Equal(t, []string{added[2].ID}, ids(h.Entries))
	assert.Equal(t, []string{added[1].ID}, h.Deleted)
	assert.Equal(t, bad, h.Cursor)

	_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: "missing", Consumer: "c"})
	assert.True(t, redis.HasErrorPrefix(errors.Unwrap(err), "NOGROUP"), "%v", err)
}

func withoutDeliveries(es []streambus.Entry) []streambus.Entry {
	out := make([]streambus.Entry, len(es))
	for i, e := range es {
		e.Deliveries = 0
		out[i] = e
	}
	return out
}

// TestXReadGroupCancelled: a read whose context is already cancelled sends
// nothing; one under a deadline reads as usual (its first round trip is
// not abandoned half-way by a cancellation, only bounded by the deadline).
func TestXReadGroupCancelled(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	f.createGroup(t, "0")
	added := f.add(t, 2)
	ctx := context.Background()
	first, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Count: 1})
	require.NoError(t, err)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = f.bus.XReadGroup(cancelled, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Ack: ids(first.Entries)})
	require.ErrorIs(t, err, context.Canceled)
	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p.Count, "neither acked nor read")

	timed, stop := context.WithTimeout(ctx, time.Minute)
	defer stop()
	b, err := f.bus.XReadGroup(timed, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Ack: ids(first.Entries)})
	require.NoError(t, err)
	assert.EqualValues(t, 1, b.Acked)
	assert.Equal(t, ids(added[1:]), ids(b.Entries))
}

// TestXReadGroupAcksSentBeforeAFailedWait: acks sent in the first round
// trip are reported as sent even when the wait that followed is cancelled.
func TestXReadGroupAcksSentBeforeAFailedWait(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	f.createGroup(t, "0")
	f.add(t, 1)
	first, err := f.bus.XReadGroup(context.Background(), streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Block: time.Minute, Ack: ids(first.Entries)})
	require.ErrorIs(t, err, context.Canceled)
	assert.True(t, b.AcksSent)
	assert.EqualValues(t, 1, b.Acked)
	assert.False(t, first.AcksSent, "no acks asked, none sent")
}
