package streambus_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

func TestXAdd(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()

	e, err := f.bus.XAdd(ctx, f.stream, event(7), 0)
	require.NoError(t, err)
	assert.NotEmpty(t, e.ID)
	assert.Equal(t, f.stream, e.Stream)
	assert.Equal(t, "k1", e.KeyID)
	assert.Equal(t, gjson.GetBytes(e.Event, "event_id").Str, e.EventID, "the event was stamped with an event_id")
	assert.True(t, gjson.GetBytes(e.Event, "timestamp").Exists(), "the event was stamped with a timestamp")
	assert.Equal(t, "user-000007", gjson.GetBytes(e.Event, "actor.id").Str)

	stored, err := f.rdb.XRange(ctx, f.stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, stored, 1)
	assert.Equal(t, e.ID, stored[0].ID)
	assert.Equal(t, map[string]any{"v": "1", "kid": "k1", "event": string(e.Event), "sig": e.Sig}, stored[0].Values,
		"the entry holds exactly the signed envelope")
	env, err := f.keys.Verify(f.stream, stored[0].Values)
	require.NoError(t, err)
	assert.Equal(t, e.Envelope(), env)

	logs := f.logs.lines(t, "stream_message_added")
	require.Len(t, logs, 1)
	assert.Equal(t, e.ID, logs[0]["entry_id"])
	assert.Equal(t, "DEBUG", logs[0]["level"], "no info line per entry")
}

func TestXAddRejectsInvalidEvent(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	for name, ev := range map[string][]byte{
		"not json":   []byte("hello"),
		"array":      []byte(`[1,2]`),
		"numeric id": []byte(`{"event_id":12}`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.bus.XAdd(context.Background(), f.stream, ev, 0)
			require.ErrorIs(t, err, integrity.ErrInvalidEvent)
		})
	}
	n, err := f.rdb.Exists(context.Background(), f.stream).Result()
	require.NoError(t, err)
	assert.Zero(t, n)
}

func TestXAddSignFails(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	bus, err := streambus.New(streambus.Config{}, nil, f.rdb, f.keys.WithMaxEventBytes(64))
	require.NoError(t, err)
	_, err = bus.XAdd(context.Background(), f.stream, event(1), 0)
	require.ErrorIs(t, err, integrity.ErrInvalidEvent, "an event over the keyring's size limit is refused before XADD")
}

func TestXAddTrimming(t *testing.T) {
	const n = 500
	tests := []struct {
		name   string
		maxLen int64
		check  func(t *testing.T, length int64)
	}{
		{"none by default", 0, func(t *testing.T, length int64) { assert.EqualValues(t, n, length) }},
		{"approximate when configured", 50, func(t *testing.T, length int64) {
			// MAXLEN ~ removes whole macro nodes (100 entries by default):
			// at least 50 stay, far fewer than 500.
			assert.GreaterOrEqual(t, length, int64(50))
			assert.Less(t, length, int64(250))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, streambus.Config{})
			ctx := context.Background()
			for i := range n {
				_, err := f.bus.XAdd(ctx, f.stream, event(i), tt.maxLen)
				require.NoError(t, err)
			}
			length, err := f.rdb.XLen(ctx, f.stream).Result()
			require.NoError(t, err)
			tt.check(t, length)
		})
	}
}
