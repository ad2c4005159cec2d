package streambus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

// TestFieldNamedTwiceSameVerdictOnEveryRead: an entry with a field named
// twice (XADD allows it) gets the same verdict however it is read: the
// non-blocking read parses the reply itself, a blocking read and a claim go
// through go-redis's map; each takes the field's last value.
func TestFieldNamedTwiceSameVerdictOnEveryRead(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	e := f.add(t, 1)[0]
	f.createGroup(t, "$")

	// Read by a blocking read: the entry arrives while it waits.
	done := make(chan streambus.Batch, 1)
	go func() {
		b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1", Block: 5 * time.Second})
		assert.NoError(t, err)
		done <- b
	}()
	time.Sleep(300 * time.Millisecond)
	signedLast := f.rawAdd(t, f.stream, "v", "1", "kid", e.KeyID, "event", `{"event_id":"forged"}`, "sig", e.Sig, "event", e.Event)
	signedFirst := f.rawAdd(t, f.stream, "v", "1", "kid", e.KeyID, "event", e.Event, "sig", e.Sig, "event", `{"event_id":"forged"}`)
	blocking := <-done
	if blocking.Len() < 2 { // the wait may have ended with the first entry
		more, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c1"})
		require.NoError(t, err)
		blocking.Entries = append(blocking.Entries, more.Entries...)
		blocking.Tampered = append(blocking.Tampered, more.Tampered...)
	}

	// Read again by the non-blocking read (a new group) and by a claim.
	require.NoError(t, f.rdb.XGroupCreate(ctx, f.stream, "g2", "0").Err())
	fast, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: "g2", Consumer: "c1"})
	require.NoError(t, err)
	claimed, err := f.bus.XAutoClaim(ctx, streambus.AutoClaimArgs{Stream: f.stream, Group: "g2", Consumer: "c2", Start: "0"})
	require.NoError(t, err)

	for name, b := range map[string]streambus.Batch{"blocking read": blocking, "non-blocking read": fast, "claim": claimed} {
		var verified, tampered []string
		for _, en := range b.Entries {
			if en.ID == signedLast || en.ID == signedFirst {
				verified = append(verified, en.ID)
				assert.Equal(t, string(e.Event), string(en.Event), "%s: the last value counts", name)
			}
		}
		for _, tm := range b.Tampered {
			tampered = append(tampered, tm.ID)
		}
		assert.Equal(t, []string{signedLast}, verified, "%s: the signed event last verifies", name)
		assert.Contains(t, tampered, signedFirst, "%s: another event last does not", name)
	}
}
