package streambus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

func TestDeadLetter(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	dlq := uniqueName(t, "dlq")
	f.createGroup(t, "0")
	added := f.add(t, 2)
	bad := f.tamper(t, added[0])
	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)
	require.Len(t, b.Entries, 2)
	require.Len(t, b.Tampered, 1)

	dl, err := f.bus.DeadLetter(ctx, f.stream, f.group, dlq, b.Entries[1].Letter(streambus.Reason{Kind: streambus.ReasonMaxDeliveries}), b.Tampered[0].Letter())
	require.NoError(t, err)
	require.Len(t, dl, 2)

	assert.Equal(t, []string{added[0].ID}, f.pendingIDs(t), "dead-lettered entries are acknowledged")

	stored, err := f.rdb.XRange(ctx, dlq, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, stored, 2)
	assert.Equal(t, dl, []string{stored[0].ID, stored[1].ID})
	first := stored[0].Values
	assert.Equal(t, added[1].ID, first[streambus.DeadLetterOriginalID])
	assert.Equal(t, f.stream, first[streambus.DeadLetterOriginalStream])
	assert.Equal(t, "max_deliveries", first[streambus.DeadLetterReason])
	assert.Equal(t, "1", first[streambus.DeadLetterDeliveries])
	assert.Equal(t, "k1", first[streambus.DeadLetterKeyID])

	// The original envelope is kept: replayed to its stream, it verifies.
	original := map[string]any{}
	for _, name := range []string{"v", "kid", "event", "sig"} {
		original[name] = first[streambus.DeadLetterFieldPrefix+name]
	}
	env, err := f.keys.Verify(f.stream, original)
	require.NoError(t, err)
	assert.Equal(t, added[1].Event, env.Event)

	second := stored[1].Values
	assert.Equal(t, bad, second[streambus.DeadLetterOriginalID])
	assert.Equal(t, "signature_mismatch", second[streambus.DeadLetterReason])
	assert.Equal(t, b.Tampered[0].Fields[5], second[streambus.DeadLetterFieldPrefix+"event"])

	logs := f.logs.lines(t, "message_dead_lettered")
	require.Len(t, logs, 2)
	assert.Equal(t, bad, logs[1]["entry_id"])

	none, err := f.bus.DeadLetter(ctx, f.stream, f.group, dlq)
	require.NoError(t, err)
	assert.Empty(t, none)

	// Moved again (another consumer finished it meanwhile): skipped.
	again, err := f.bus.DeadLetter(ctx, f.stream, f.group, dlq, b.Entries[1].Letter(streambus.Reason{Kind: streambus.ReasonMaxDeliveries}))
	require.NoError(t, err)
	assert.Equal(t, []string{""}, again)
	n, err := f.rdb.XLen(ctx, dlq).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
}

// TestDeadLetterAtomic: when the copy cannot be written, nothing is
// acknowledged (MULTI/EXEC would have acknowledged anyway).
func TestDeadLetterAtomic(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	dlq := uniqueName(t, "dlq")
	require.NoError(t, f.rdb.Set(ctx, dlq, "not a stream", 0).Err())
	f.createGroup(t, "0")
	f.add(t, 3)
	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)
	letters := []streambus.Letter{b.Entries[0].Letter(streambus.Reason{Kind: streambus.ReasonRejected}), b.Entries[1].Letter(streambus.Reason{Kind: streambus.ReasonRejected, Detail: "plugin \"p\": no"})}

	_, err = f.bus.DeadLetter(ctx, f.stream, f.group, dlq, letters...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WRONGTYPE")
	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.EqualValues(t, 3, p.Count, "nothing was acknowledged")
	typ, err := f.rdb.Type(ctx, dlq).Result()
	require.NoError(t, err)
	assert.Equal(t, "string", typ)
}

func TestCommit(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	sinkA, sinkB := uniqueName(t, "sinkA"), uniqueName(t, "sinkB")
	f.createGroup(t, "0")
	added := f.add(t, 3)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)

	items := []streambus.Item{
		{ID: added[0].ID, Adds: []streambus.Add{
			{Stream: sinkA, Event: []byte(`{"kind":"a1"}`)},
			{Stream: sinkB, Event: []byte(`{"kind":"b1"}`)},
		}},
		{ID: added[1].ID, Adds: []streambus.Add{{Stream: sinkA, Event: []byte(`{"kind":"a2"}`), MaxLen: 1000}}},
	}
	res, err := f.bus.Commit(ctx, f.stream, f.group, items...)
	require.NoError(t, err)
	assert.EqualValues(t, 2, res.Acked)
	require.Len(t, res.IDs, 2)
	require.Len(t, res.IDs[0], 2)
	require.Len(t, res.IDs[1], 1)

	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p.Count)

	a := readAll(t, f.bus, sinkA)
	require.Len(t, a.Entries, 2, "sink entries are signed for their stream")
	assert.Equal(t, []string{res.IDs[0][0], res.IDs[1][0]}, ids(a.Entries))
	assert.Contains(t, string(a.Entries[1].Event), `"kind":"a2"`)
	bb := readAll(t, f.bus, sinkB)
	assert.Equal(t, []string{res.IDs[0][1]}, ids(bb.Entries))

	// Committed again (a retry after a lost reply): nothing twice.
	res, err = f.bus.Commit(ctx, f.stream, f.group, items...)
	require.NoError(t, err)
	assert.Zero(t, res.Acked)
	assert.Equal(t, [][]string{nil, nil}, res.IDs)
	n, err := f.rdb.XLen(ctx, sinkA).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)

	// Acks only, and nothing at all.
	res, err = f.bus.Commit(ctx, f.stream, f.group, streambus.Item{ID: added[2].ID})
	require.NoError(t, err)
	assert.EqualValues(t, 1, res.Acked)
	res, err = f.bus.Commit(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.Zero(t, res.Acked)
}

// TestCommitStamped: an add marked Stamped is signed as it is, not stamped
// again; an unmarked one gets an event id and a timestamp.
func TestCommitStamped(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	sink := uniqueName(t, "sink")
	f.createGroup(t, "0")
	added := f.add(t, 2)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)

	stamped, id, err := integrity.Stamp([]byte(`{"kind":"pre"}`), time.Now())
	require.NoError(t, err)
	res, err := f.bus.Commit(ctx, f.stream, f.group,
		streambus.Item{ID: added[0].ID, Adds: []streambus.Add{{Stream: sink, Event: stamped, Stamped: true}}},
		streambus.Item{ID: added[1].ID, Adds: []streambus.Add{{Stream: sink, Event: []byte(`{"kind":"raw"}`)}}},
	)
	require.NoError(t, err)
	assert.EqualValues(t, 2, res.Acked)

	got := readAll(t, f.bus, sink)
	require.Len(t, got.Entries, 2, "both verify for the sink")
	assert.Equal(t, string(stamped), string(got.Entries[0].Event), "signed byte for byte, not stamped again")
	assert.Equal(t, id, got.Entries[0].EventID)
	assert.Contains(t, string(got.Entries[1].Event), `"event_id":`)
	assert.Contains(t, string(got.Entries[1].Event), `"timestamp":`)
}

func TestCommitManyAcks(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	f.createGroup(t, "0")
	prefill(t, f.rdb, f.keys, f.stream, 2500)
	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Count: 3000})
	require.NoError(t, err)
	require.Len(t, b.Entries, 2500, "a batch verified on several cores keeps every entry, in order")
	items := make([]streambus.Item, len(b.Entries))
	for i, e := range b.Entries {
		items[i] = streambus.Item{ID: e.ID}
		if i > 0 {
			require.Equal(t, -1, streambus.CompareIDs(b.Entries[i-1].ID, e.ID))
		}
	}
	res, err := f.bus.Commit(ctx, f.stream, f.group, items...)
	require.NoError(t, err)
	assert.EqualValues(t, 2500, res.Acked)
}

func TestCommitAtomic(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	sink, broken := uniqueName(t, "sink"), uniqueName(t, "broken")
	require.NoError(t, f.rdb.Set(ctx, broken, "not a stream", 0).Err())
	f.createGroup(t, "0")
	added := f.add(t, 1)
	_, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c"})
	require.NoError(t, err)

	_, err = f.bus.Commit(ctx, f.stream, f.group, streambus.Item{ID: added[0].ID, Adds: []streambus.Add{
		{Stream: sink, Event: []byte(`{"kind":"ok"}`)},
		{Stream: broken, Event: []byte(`{"kind":"lost"}`)},
	}})
	require.Error(t, err)
	p, err := f.bus.XPending(ctx, f.stream, f.group)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p.Count, "a failed commit leaves the entry pending, to be retried")
	n, err := f.rdb.Exists(ctx, sink).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "and writes nothing")

	_, err = f.bus.Commit(ctx, f.stream, f.group, streambus.Item{ID: added[0].ID, Adds: []streambus.Add{{Stream: sink, Event: []byte(`[]`)}}})
	require.ErrorIs(t, err, integrity.ErrInvalidEvent)
}
