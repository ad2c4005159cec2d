package streambus_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

// TestAttempts: Charge counts attempts of pending entries only; reads and
// claims report them without counting; an ack through Commit (Attempted)
// or DeadLetter removes the count.
func TestAttempts(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 3)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1"})
	require.NoError(t, err)
	_, err = f.bus.XAck(ctx, f.stream, f.group, added[2].ID)
	require.NoError(t, err)

	got, err := f.bus.Charge(ctx, f.stream, f.group, added[0].ID, added[0].ID, added[1].ID, added[2].ID)
	require.NoError(t, err)
	assert.Equal(t, []streambus.Charged{{1, 1}, {2, 1}, {1, 1}, {0, 0}}, got, "an acknowledged entry is not charged")

	// A claim counts a delivery, not an attempt.
	b, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group, Consumer: "c2"})
	require.NoError(t, err)
	require.Len(t, b.Entries, 2)
	assert.EqualValues(t, 2, b.Entries[0].Attempts)
	assert.EqualValues(t, 2, b.Entries[0].Deliveries)
	assert.EqualValues(t, 1, b.Entries[1].Attempts)
	h, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c2", ID: "0"})
	require.NoError(t, err)
	require.Len(t, h.Entries, 2)
	assert.EqualValues(t, 2, h.Entries[0].Attempts, "a history read reports them too")

	res, err := f.bus.Commit(ctx, f.stream, f.group, streambus.Item{ID: added[0].ID, Attempted: true})
	require.NoError(t, err)
	assert.EqualValues(t, 1, res.Acked)
	_, err = f.bus.DeadLetter(ctx, f.stream, f.group, uniqueName(t, "dlq"), h.Entries[1].Letter(streambus.Reason{Kind: streambus.ReasonMaxDeliveries}))
	require.NoError(t, err)
	n, err := f.rdb.Exists(ctx, streambus.AttemptsKey(f.stream)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no count left behind")

	_, err = f.bus.Charge(ctx, f.stream, "")
	require.ErrorIs(t, err, streambus.ErrInvalidArgs)
}

// TestTouch: the entries a consumer holds stop looking idle, without a
// delivery counted; entries another consumer holds are left alone.
func TestTouch(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 3)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Count: 2})
	require.NoError(t, err)
	_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c2"})
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)

	n, err := f.bus.Touch(ctx, f.stream, f.group, "c1", ids(added)...)
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
	ps, err := f.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: f.stream, Group: f.group, Start: "-", End: "+", Count: 10}).Result()
	require.NoError(t, err)
	require.Len(t, ps, 3)
	for _, p := range ps[:2] {
		assert.Equal(t, "c1", p.Consumer)
		assert.Less(t, p.Idle, 50*time.Millisecond, "touched")
		assert.EqualValues(t, 1, p.RetryCount, "no delivery counted")
	}
	assert.Equal(t, "c2", ps[2].Consumer, "not taken from another consumer")
	assert.GreaterOrEqual(t, ps[2].Idle, 100*time.Millisecond)

	b, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group, Consumer: "c3", MinIdle: 80 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, ids(added[2:]), ids(b.Entries), "only the untouched entry looks idle")
}
