package streambus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

func TestXGroupCreateIdempotent(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()

	created, err := f.bus.XGroupCreate(ctx, f.stream, f.group, "")
	require.NoError(t, err)
	assert.True(t, created)
	n, err := f.rdb.Exists(ctx, f.stream).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "the missing stream was created")

	created, err = f.bus.XGroupCreate(ctx, f.stream, f.group, "0")
	require.NoError(t, err, "an existing group is not an error")
	assert.False(t, created)

	groups, err := f.rdb.XInfoGroups(ctx, f.stream).Result()
	require.NoError(t, err)
	require.Len(t, groups, 1)
	assert.Equal(t, f.group, groups[0].Name)
	assert.Len(t, f.logs.lines(t, "consumer_group_created"), 1, "logged once, when created")

	// Another error is an error.
	require.NoError(t, f.rdb.Set(ctx, f.stream+":string", "x", 0).Err())
	_, err = f.bus.XGroupCreate(ctx, f.stream+":string", f.group, "0")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WRONGTYPE")
}

func TestXGroupCreateStart(t *testing.T) {
	ctx := context.Background()
	for start, want := range map[string]int{"0": 2, "$": 0} {
		f := newFixture(t, streambus.Config{})
		f.add(t, 2)
		f.createGroup(t, start)
		b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Block: -1})
		require.NoError(t, err)
		assert.Len(t, b.Entries, want, "start %q", start)
	}
}

func TestXAck(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	added := f.add(t, 3)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)

	n, err := f.bus.XAck(ctx, f.stream, f.group, added[0].ID, added[1].ID)
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
	n, err = f.bus.XAck(ctx, f.stream, f.group, added[0].ID)
	require.NoError(t, err)
	assert.Zero(t, n, "an id acknowledged twice counts once")
	n, err = f.bus.XAck(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.Zero(t, n, "no ids, no call")

	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p.Count)
	assert.Equal(t, added[2].ID, p.Lowest)

	_, err = f.bus.XAck(ctx, f.stream, f.group, "not-an-id")
	require.Error(t, err)
}

func TestXPending(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")

	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.Equal(t, streambus.PendingInfo{Consumers: map[string]int64{}}, p, "nothing pending")

	added := f.add(t, 5)
	_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Count: 2})
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	_, err = f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c2", Count: 3})
	require.NoError(t, err)

	p, err = f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.Equal(t, streambus.PendingInfo{
		Count: 5, Lowest: added[0].ID, Highest: added[4].ID,
		Consumers: map[string]int64{"c1": 2, "c2": 3},
	}, p)

	_, err = f.bus.XPending(ctx, f.stream, "missing")
	require.Error(t, err)
}

func TestXInfoGroup(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	f.add(t, 5)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Count: 2})
	require.NoError(t, err)
	info, err := f.bus.XInfoGroup(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.Equal(t, streambus.GroupInfo{Pending: 2, Lag: 3}, info)
	_, err = f.bus.XInfoGroup(ctx, f.stream, "missing")
	require.ErrorIs(t, err, streambus.ErrNoGroup)
}
