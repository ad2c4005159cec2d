package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/shard"
)

// A named producer's re-run with another shard layout than its first run
// is refused (its events went to other shards: some would be skipped as
// written, others written twice); with the first run's layout it completes
// the trail, every event once.
func TestProducerRerunKeepsItsShardLayout(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Shared(t)
	stream := testStream(t)
	keys := testKeys(t)
	event := func(i int) string { return fmt.Sprintf(`{"actor":"user-%d","n":%d}`, i%5, i) }

	first := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: "file-abc", BatchSize: 8})
	for i := range 40 {
		_, err := first.Send(ctx, event(i))
		require.NoError(t, err)
	}
	require.NoError(t, first.Close(ctx))

	_, err := audit.NewProducer(audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: "file-abc", BatchSize: 8,
		Shards: 2, PartitionKey: "actor"}, nil)
	require.ErrorIs(t, err, audit.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "with 1 shard")
	assert.Contains(t, err.Error(), "now runs with 2 shards")

	again := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: "file-abc", BatchSize: 8})
	for i := range 100 {
		_, err := again.Send(ctx, event(i))
		require.NoError(t, err)
	}
	require.NoError(t, again.Close(ctx))
	stored := map[float64]int{}
	for _, ev := range streamEvents(t, srv.Client(t), stream) {
		stored[ev["n"].(float64)]++
	}
	for i := range 100 {
		require.Equal(t, 1, stored[float64(i)], "event %d stored once", i)
	}

	// And the other way round: a sharded first run, a one-shard re-run.
	grown := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: "file-def", Shards: 3, PartitionKey: "actor"})
	for i := range 30 {
		_, err := grown.Send(ctx, event(i))
		require.NoError(t, err)
	}
	require.NoError(t, grown.Close(ctx))
	_, err = audit.NewProducer(audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: "file-def"}, nil)
	require.ErrorIs(t, err, audit.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "with 3 shards")
}

// The derived event ids of a named producer's shards are its own: shard 1
// of "imp" shares none with another producer "imp.1" (an event_id is the
// idempotency key of every external sink).
func TestShardedProducerIDsAreTheirOwn(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Shared(t)
	stream := testStream(t)
	keys := testKeys(t)
	ids := func(name string, shards int, tag string) map[string]string {
		p := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: name, Shards: shards})
		out := map[string]string{}
		for i := range 20 {
			pd, err := p.Send(ctx, fmt.Sprintf(`{"from":%q,"n":%d}`, tag, i))
			require.NoError(t, err)
			r := pd.Result()
			require.NoError(t, r.Err)
			out[r.EventID] = fmt.Sprintf("%s #%d", tag, i)
		}
		require.NoError(t, p.Close(ctx))
		return out
	}
	a := ids("imp", 2, "producer imp")
	b := ids("imp.1", 2, "producer imp.1")
	var shared []string
	for id, what := range a {
		if other, ok := b[id]; ok {
			shared = append(shared, fmt.Sprintf("%s: %s and %s", id, what, other))
		}
	}
	assert.Empty(t, shared, "different events with one event_id")
}

// With Shards > 1 events spool in SpoolDir/shard-<k> as well:
// ReadSpoolStatus (auditproc spool status DIR) counts them, and a Producer
// of fewer shards on DIR (auditproc spool drain DIR) drains them all.
func TestShardedSpoolIsCountedAndDrained(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "spool")
	keys := testKeys(t)
	stream := testStream(t)
	p := newProducer(t, audit.Config{RedisURL: closedPortURL(t), Keys: keys, Stream: stream, SpoolDir: dir,
		WriteTimeout: 100 * time.Millisecond, RetryDelay: 20 * time.Millisecond, BatchSize: 8, Shards: 4})
	for i := range 40 {
		_, err := p.Send(ctx, fmt.Sprintf(`{"n":%d}`, i))
		require.NoError(t, err)
	}
	require.NoError(t, p.Flush(ctx))
	waiting := p.Stats().SpoolEvents
	require.EqualValues(t, 40, waiting)
	require.NoError(t, p.Close(ctx))

	st, err := audit.ReadSpoolStatus(dir)
	require.NoError(t, err)
	subdirs, _ := filepath.Glob(filepath.Join(dir, "shard-*"))
	assert.EqualValues(t, waiting, st.Events, "spool status %s counts %d of %d waiting events; the rest are in %v", dir, st.Events, waiting, subdirs)
	require.Len(t, subdirs, 3)

	// spool drain DIR: a one-shard Producer on DIR, with Redis back.
	srv := redistest.Shared(t)
	d := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, SpoolDir: dir})
	assert.EqualValues(t, waiting, d.Stats().SpoolEvents+int64(d.Stats().Written), "the drain sees every shard's spool")
	require.Eventually(t, func() bool { return d.Stats().SpoolEvents == 0 }, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, d.Close(ctx))
	left := int64(0)
	for _, sd := range subdirs {
		s, err := audit.ReadSpoolStatus(sd)
		require.NoError(t, err)
		left += s.Events
	}
	_, statErr := os.Stat(dir)
	require.NoError(t, statErr)
	assert.Zero(t, left, "events left in %v after 'spool drain %s' reported it empty", subdirs, dir)
	stored := 0
	for k := range 4 {
		stored += len(streamEvents(t, srv.Client(t), shard.Key(stream, k)))
	}
	assert.Equal(t, 40, stored, "every spooled event in its shard's stream once")
}
