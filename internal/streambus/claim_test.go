package streambus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

// TestXAutoClaimDeliveriesAcrossOwnPending checks that the delivery counts of a
// claimed batch are found even when the consumer holds other pending entries
// between the batch's ids (the XPENDING range is paged).
func TestXAutoClaimDeliveriesAcrossOwnPending(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 5)
	// c2 owns 1 and 2; c1 owns 0, 3 and 4.
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Count: 1})
	require.NoError(t, err)
	_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c2", Count: 2})
	require.NoError(t, err)
	_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Count: 2})
	require.NoError(t, err)
	// Deliver 1 and 2 twice more to c2 so their counts differ.
	for range 2 {
		_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c2", ID: "0"})
		require.NoError(t, err)
	}

	// Claim 1 and 2 (c2's) for c1, which holds 0, 3 and 4 around them.
	b, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Start: added[1].ID, Count: 2})
	require.NoError(t, err)
	require.Len(t, b.Entries, 2)
	got := map[string]int64{}
	for _, e := range b.Entries {
		got[e.ID] = e.Deliveries
	}
	assert.Equal(t, map[string]int64{added[1].ID: 4, added[2].ID: 4}, got)
}

func TestXAutoClaim(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 4)
	bad := f.tamper(t, added[0])
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "crashed"})
	require.NoError(t, err)
	require.NoError(t, f.rdb.XDel(ctx, f.stream, added[1].ID).Err())
	time.Sleep(20 * time.Millisecond)

	// Page through the pending list three entries at a time.
	var got streambus.Batch
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		b, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{
			Stream: f.stream, Group: f.group, Consumer: "rescuer", MinIdle: 10 * time.Millisecond, Start: cursor, Count: 3,
		})
		require.NoError(t, err)
		got.Entries = append(got.Entries, b.Entries...)
		got.Tampered = append(got.Tampered, b.Tampered...)
		got.Deleted = append(got.Deleted, b.Deleted...)
		cursor = b.Cursor
		if cursor == "0-0" {
			break
		}
	}
	assert.Equal(t, []string{added[0].ID, added[2].ID, added[3].ID}, ids(got.Entries))
	for _, e := range got.Entries {
		assert.EqualValues(t, 2, e.Deliveries)
	}
	require.Len(t, got.Tampered, 1, "tampered entries are claimed and reported, for dead-lettering")
	assert.Equal(t, bad, got.Tampered[0].ID)
	assert.Equal(t, "signature_mismatch", got.Tampered[0].Reason)
	assert.EqualValues(t, 2, got.Tampered[0].Deliveries)
	assert.Equal(t, []string{added[1].ID}, got.Deleted, "an entry deleted while pending is reported")

	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"rescuer": 4}, p.Consumers, "the deleted entry left the pending list")

	// Nothing idle: nothing claimed.
	b, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group, Consumer: "other", MinIdle: time.Hour})
	require.NoError(t, err)
	assert.Zero(t, b.Len())
	assert.Equal(t, "0-0", b.Cursor)
}

func TestXAutoClaimDeliveryCountsRefused(t *testing.T) {
	f := newFixtureOn(t, limitedClient(t, "xpending"), streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	f.add(t, 1)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1"})
	require.NoError(t, err)
	_, err = f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: f.group, Consumer: "c2"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NOPERM")
}
