package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/redistest"
)

func newProducer(t *testing.T, cfg audit.Config) *audit.Producer {
	t.Helper()
	if cfg.Client == nil && cfg.RedisURL == "" {
		cfg.RedisURL = redistest.Shared(t).URL()
	}
	if cfg.Keys == nil {
		cfg.Keys = testKeys(t)
	}
	if cfg.Stream == "" {
		cfg.Stream = testStream(t)
	}
	p, err := audit.NewProducer(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// streamEvents returns the events of stream, in stream order, decoded:
// the producers' chain checkpoints left out.
func streamEvents(t *testing.T, rdb *redis.Client, stream string) []map[string]any {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(t, err)
	out := make([]map[string]any, 0, len(msgs))
	for _, m := range msgs {
		if m.Values["kind"] == "checkpoint" {
			continue
		}
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(m.Values["event"].(string)), &ev))
		out = append(out, ev)
	}
	return out
}

func TestProducerWritesInOrder(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Shared(t)
	stream := testStream(t)
	keys := testKeys(t)
	p := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, BatchSize: 64, QueueSize: 256})
	const n = 3000
	pend := make([]audit.Pending, n)
	for i := range n {
		var err error
		pend[i], err = p.Send(ctx, map[string]any{"n": i, "action": "read"})
		require.NoError(t, err)
	}
	require.NoError(t, p.Flush(ctx))
	seen := map[string]bool{}
	for i, pd := range pend {
		r := pd.Result()
		require.NoError(t, r.Err, "event %d", i)
		assert.NotEmpty(t, r.EntryID)
		assert.False(t, seen[r.EventID], "event ids are unique")
		seen[r.EventID] = true
	}
	evs := streamEvents(t, srv.Client(t), stream)
	require.Len(t, evs, n)
	for i, ev := range evs {
		require.EqualValues(t, i, ev["n"], "stream order is send order")
	}
	st := p.Stats()
	assert.EqualValues(t, n, st.Written)
	assert.Zero(t, st.Queued)

	// Everything a service reads back verifies.
	bus := newBus(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream})
	_, err := bus.CreateGroup(ctx)
	require.NoError(t, err)
	got := 0
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for msg, err := range bus.Consume(cctx, "c") {
		require.NoError(t, err)
		assert.Equal(t, pend[got].Result().EntryID, msg.ID)
		if got++; got == n {
			break
		}
	}
	assert.Zero(t, bus.TamperedCounts()["signature_mismatch"])

	_, err = p.Send(ctx, []byte(`[1]`))
	require.ErrorIs(t, err, audit.ErrInvalidEvent, "refused at once, nothing queued")
}

// TestProducerSameIDSkipsStored: a second Producer with the same name sends
// the same sequence (a re-run): Redis keeps what it has, writes the rest,
// and the derived event ids are the same.
func TestProducerSameIDSkipsStored(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Shared(t)
	stream := testStream(t)
	keys := testKeys(t)
	cfg := audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, ProducerID: "file-abc", BatchSize: 16}
	first := newProducer(t, cfg)
	var ids []string
	for i := range 40 {
		pd, err := first.Send(ctx, fmt.Sprintf(`{"n":%d}`, i))
		require.NoError(t, err)
		ids = append(ids, pd.Result().EventID)
	}
	require.NoError(t, first.Close(ctx))

	second := newProducer(t, cfg)
	var pend []audit.Pending
	for i := range 100 {
		pd, err := second.Send(ctx, fmt.Sprintf(`{"n":%d}`, i))
		require.NoError(t, err)
		pend = append(pend, pd)
	}
	require.NoError(t, second.Close(ctx))
	for i, pd := range pend {
		r := pd.Result()
		require.NoError(t, r.Err)
		if i < 40 {
			assert.True(t, r.Duplicate, "event %d was stored by the first run", i)
			assert.Equal(t, ids[i], r.EventID, "derived ids repeat")
		} else {
			assert.False(t, r.Duplicate)
			assert.NotEmpty(t, r.EntryID)
		}
	}
	evs := streamEvents(t, srv.Client(t), stream)
	require.Len(t, evs, 100)
	for i, ev := range evs {
		assert.EqualValues(t, i, ev["n"])
	}
}

// TestAuditUnknownOutcome: Redis stalls (SIGSTOP) under concurrent Audit
// calls. Every call that says ErrUnavailable left nothing in the stream;
// the others say ErrOutcomeUnknown, and retrying them with the stamped
// event they carry stores each event exactly once.
func TestAuditUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.WithBackend(redistest.Process))
	stream := "audit:unknown"
	bus := newBus(t, audit.Config{RedisURL: srv.URL(), Stream: stream, WriteTimeout: 400 * time.Millisecond})
	_, err := bus.Audit(ctx, `{"warm":"up"}`)
	require.NoError(t, err)

	require.NoError(t, srv.Pause())
	resumed := false
	defer func() {
		if !resumed {
			_ = srv.Resume()
		}
	}()
	const n = 16
	type outcome struct {
		id  string
		err error
	}
	out := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := bus.Audit(ctx, fmt.Sprintf(`{"n":%d}`, i))
			out[i] = outcome{id, err}
		}()
	}
	wg.Wait()
	require.NoError(t, srv.Resume())
	resumed = true

	unknown := 0
	var unavailable []int
	for i, o := range out {
		switch {
		case o.err == nil:
		case errorIs(o.err, audit.ErrOutcomeUnknown):
			unknown++
			assert.NotErrorIs(t, o.err, audit.ErrUnavailable, "unknown is not 'not written'")
			var ue *audit.OutcomeUnknownError
			require.ErrorAs(t, o.err, &ue)
			require.NotEmpty(t, ue.EventID)
			// The retry: the same stamped event, so the same event id.
			var id string
			require.Eventually(t, func() bool { id, err = bus.Audit(ctx, ue.Event); return err == nil }, 10*time.Second, 50*time.Millisecond)
			out[i].id = id
		case errorIs(o.err, audit.ErrUnavailable):
			unavailable = append(unavailable, i)
		default:
			t.Fatalf("call %d: unexpected error %v", i, o.err)
		}
	}
	assert.Positive(t, unknown, "a stalled server leaves the outcome unknown")

	evs := streamEvents(t, srv.Client(t), stream)
	count := map[float64]int{}
	ids := map[string]int{}
	for _, ev := range evs[1:] {
		count[ev["n"].(float64)]++
		ids[ev["event_id"].(string)]++
	}
	for i, o := range out {
		if slicesContains(unavailable, i) {
			assert.Zero(t, count[float64(i)], "call %d said not written", i)
			continue
		}
		assert.Equal(t, 1, count[float64(i)], "event %d is stored exactly once", i)
		assert.NotEmpty(t, o.id)
	}
	for id, c := range ids {
		assert.Equal(t, 1, c, "event id %s", id)
	}

	// With the server gone (connection refused) the event is known not
	// written.
	require.NoError(t, srv.Stop(ctx))
	_, err = bus.Audit(ctx, `{"n":"down"}`)
	require.ErrorIs(t, err, audit.ErrUnavailable)
	assert.NotErrorIs(t, err, audit.ErrOutcomeUnknown)
}

func errorIs(err, target error) bool { return err != nil && errorsIs(err, target) }

// TestSpoolFull: with Redis away, events go to the spool until its cap;
// then they are refused with ErrSpoolFull, which says so; the next Producer
// on the spool sends what it holds once Redis answers.
func TestSpoolFull(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "spool")
	keys := testKeys(t)
	stream := "audit:spoolfull"
	down := closedPortURL(t)
	p := newProducer(t, audit.Config{RedisURL: down, Keys: keys, Stream: stream, SpoolDir: dir, SpoolMaxBytes: 16 << 10,
		WriteTimeout: 100 * time.Millisecond, RetryDelay: 20 * time.Millisecond, BatchSize: 8})
	var pend []audit.Pending
	for i := range 200 {
		pd, err := p.Send(ctx, fmt.Sprintf(`{"n":%d,"pad":"%0100d"}`, i, 0))
		require.NoError(t, err)
		pend = append(pend, pd)
	}
	require.NoError(t, p.Flush(ctx))
	spooled, full := 0, 0
	for _, pd := range pend {
		r := pd.Result()
		switch {
		case r.Spooled:
			require.Zero(t, full, "once full, nothing more is spooled out of order")
			spooled++
		case errorIs(r.Err, audit.ErrSpoolFull):
			full++
			assert.ErrorIs(t, r.Err, audit.ErrUnavailable, "not written")
			assert.Contains(t, r.Err.Error(), "the cap is 16384")
		default:
			t.Fatalf("unexpected result %+v", r)
		}
	}
	assert.Positive(t, spooled)
	assert.Positive(t, full)
	st := p.Stats()
	assert.EqualValues(t, spooled, st.SpoolEvents)
	assert.LessOrEqual(t, st.SpoolBytes, int64(16<<10))

	status, err := audit.ReadSpoolStatus(dir)
	require.NoError(t, err)
	assert.EqualValues(t, spooled, status.Events)
	assert.True(t, status.InUse)
	_, err = audit.NewProducer(audit.Config{RedisURL: down, Keys: keys, Stream: stream, SpoolDir: dir}, nil)
	require.ErrorContains(t, err, "in use by another process")
	require.NoError(t, p.Close(ctx))

	// Redis is back: the next Producer drains the spool first, in order.
	srv := redistest.Shared(t)
	next := newProducer(t, audit.Config{RedisURL: srv.URL(), Keys: keys, Stream: stream, SpoolDir: dir})
	require.Eventually(t, func() bool { return next.Stats().SpoolEvents == 0 }, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, next.Close(ctx))
	evs := streamEvents(t, srv.Client(t), stream)
	require.Len(t, evs, spooled)
	for i, ev := range evs {
		assert.EqualValues(t, i, ev["n"])
	}
	status, err = audit.ReadSpoolStatus(dir)
	require.NoError(t, err)
	assert.Zero(t, status.Events)
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func slicesContains(s []int, v int) bool { return slices.Contains(s, v) }

// closedPortURL is a Redis URL on a loopback port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "redis://" + addr + "/0"
}
