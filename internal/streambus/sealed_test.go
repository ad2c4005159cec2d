package streambus_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/trail"
)

// check walks streams as `auditproc verify` does (dlq is a dead-letter
// stream) and returns the checker and its findings.
func check(t *testing.T, f *fixture, dlq string, streams ...string) (*trail.Checker, []trail.Finding) {
	t.Helper()
	c := trail.New(f.keys, trail.Config{FromStart: true, DeadLetters: map[string]bool{dlq: true}})
	for _, s := range streams {
		page, err := f.bus.XRange(context.Background(), s, "-", "+", 10000)
		require.NoError(t, err)
		entries := make([]trail.Entry, len(page))
		for i, e := range page {
			entries[i] = trail.Entry{ID: e.ID, Fields: e.Fields}
		}
		c.AddPage(s, entries)
	}
	findings, _ := c.Finish()
	return c, findings
}

// TestChainedCommitAndDeadLetters: a chained Bus (a replica) signs its
// commit emits as envelope version 2 and seals its dead letters, each
// stream one chain with checkpoints; an emit or a letter whose entry was
// acknowledged elsewhere is replaced by its void, so the chain has no hole;
// a dead letter copying an ambiguous entry is no finding (the seal covers
// its fields in order); a letter replayed and deleted with a withdrawal is
// no gap. Deleting or changing any of it is a finding.
func TestChainedCommitAndDeadLetters(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	out, dlq := uniqueName(t, "out"), uniqueName(t, "dlq")
	f.createGroup(t, "0")
	f.add(t, 3)
	f.rawAdd(t, f.stream, "v", "1", "kid", "k1", "event", `{"event_id":"x","action":"evil"}`, "sig", "00", "event", `{"event_id":"x"}`)
	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Block: -1})
	require.NoError(t, err)
	require.Len(t, b.Entries, 3)
	require.Len(t, b.Tampered, 1)

	replica, err := streambus.New(streambus.Config{Source: "run.c"}, slog.New(slog.DiscardHandler), f.rdb, f.keys)
	require.NoError(t, err)
	emit := func(id string) streambus.Item {
		return streambus.Item{ID: id, Adds: []streambus.Add{{Stream: out, Event: []byte(`{"action":"copy"}`)}, {Stream: out, Event: []byte(`{"action":"copy2"}`)}}}
	}
	res, err := replica.Commit(ctx, f.stream, f.group, emit(b.Entries[0].ID))
	require.NoError(t, err)
	require.Len(t, res.IDs[0], 2)
	again, err := replica.Commit(ctx, f.stream, f.group, emit(b.Entries[0].ID), emit(b.Entries[1].ID))
	require.NoError(t, err)
	assert.Nil(t, again.IDs[0], "acknowledged already: not appended")
	assert.Len(t, again.IDs[1], 2)

	letters, err := replica.DeadLetter(ctx, f.stream, f.group, dlq,
		b.Entries[2].Letter(streambus.Reason{Kind: streambus.ReasonRejected}), b.Tampered[0].Letter())
	require.NoError(t, err)
	require.NotEmpty(t, letters[0])
	require.NotEmpty(t, letters[1])
	skipped, err := replica.DeadLetter(ctx, f.stream, f.group, dlq, b.Entries[2].Letter(streambus.Reason{Kind: streambus.ReasonRejected}))
	require.NoError(t, err)
	assert.Equal(t, []string{""}, skipped)
	require.NoError(t, replica.CloseChain(ctx))

	stored, err := f.bus.XRange(ctx, dlq, letters[1], letters[1], 1)
	require.NoError(t, err)
	assert.True(t, integrity.IsSealed(stored[0].Fields), "a dead letter is sealed: %q", stored[0].Fields)
	assert.True(t, stored[0].IsDeadLetter())
	sealed := stored[0].Fields

	c, findings := check(t, f, dlq, out, dlq)
	assert.Empty(t, findings)
	assert.Equal(t, 3, c.Voids, "the two emits of the repeated commit and the letter moved again")
	_, sources := c.Finish()
	for _, s := range sources {
		assert.True(t, s.Closed, "%s on %s closed", s.Source, s.Stream)
	}

	// A letter replayed: its withdrawal, by another source, takes its place.
	replayer, err := streambus.New(streambus.Config{Source: "dlq-replay"}, slog.New(slog.DiscardHandler), f.rdb, f.keys)
	require.NoError(t, err)
	w, ok := stored[0].Withdrawal(f.stream + " 1-1")
	require.True(t, ok)
	_, err = replayer.AppendSealed(ctx, dlq, w)
	require.NoError(t, err)
	require.NoError(t, replayer.CloseChain(ctx))
	require.NoError(t, f.rdb.XDel(ctx, dlq, letters[1]).Err())
	c, findings = check(t, f, dlq, out, dlq)
	assert.Empty(t, findings)
	assert.Equal(t, 1, c.Withdrawn)

	// Withdrawn twice (a copy of the letter replayed again): a replay.
	again2, err := streambus.New(streambus.Config{Source: "dlq-replay"}, slog.New(slog.DiscardHandler), f.rdb, f.keys)
	require.NoError(t, err)
	twice, err := again2.AppendSealed(ctx, dlq, w)
	require.NoError(t, err)
	require.NoError(t, again2.CloseChain(ctx))
	_, findings = check(t, f, dlq, out, dlq)
	require.Len(t, findings, 1)
	assert.Equal(t, trail.Replay, findings[0].Kind)
	assert.Equal(t, twice, findings[0].EntryID)
	// An unsealed letter after the first sealed entry: written without the key.
	forged := f.rawAdd(t, dlq, streambus.DeadLetterOriginalID, "1-1", streambus.DeadLetterReason, "rejected")
	_, findings = check(t, f, dlq, out, dlq)
	require.Len(t, findings, 2, "%+v", findings)
	assert.Equal(t, forged, findings[1].EntryID)
	assert.Equal(t, trail.BadSignature, findings[1].Kind)
	require.NoError(t, f.rdb.XDel(ctx, dlq, forged).Err())

	// Damage: an emit deleted, a letter changed.
	emits, err := f.bus.XRange(ctx, out, "-", "+", 1)
	require.NoError(t, err)
	require.NoError(t, f.rdb.XDel(ctx, out, emits[0].ID).Err())
	changed := make([]any, 0, len(sealed))
	for _, v := range sealed {
		changed = append(changed, v)
	}
	changed[5] = "max_deliveries" // the reason
	bad := f.rawAdd(t, dlq, changed...)
	_, findings = check(t, f, dlq, out, dlq)
	found := map[string]string{}
	for _, fd := range findings {
		found[fd.Stream+" "+fd.EntryID] = fd.Kind
	}
	assert.Equal(t, trail.BadSignature, found[dlq+" "+bad], "%+v", findings)
	gaps := 0
	for _, fd := range findings {
		if fd.Stream == out && fd.Kind == trail.Gap {
			gaps++
		}
	}
	assert.Equal(t, 1, gaps, "%+v", findings)
}

// TestDeadLetterOfAWideEntry: the dead letter of an entry too wide for the
// commit script to copy keeps its first MaxCopiedFields fields and says how
// many it omits; the entry is dead-lettered, not acknowledged without one.
func TestDeadLetterOfAWideEntry(t *testing.T) {
	f := newFixture(t, streambus.Config{})
	ctx := context.Background()
	dlq := uniqueName(t, "dlq")
	f.createGroup(t, "0")
	values := []any{"v", "1", "kid", "k1"}
	for i := range 3000 {
		values = append(values, fmt.Sprintf("f%d", i), "x")
	}
	wide := f.rawAdd(t, f.stream, values...)
	b, err := f.bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: f.stream, Group: f.group, Consumer: "c", Block: -1})
	require.NoError(t, err)
	require.Len(t, b.Tampered, 1)
	replica, err := streambus.New(streambus.Config{Source: "run.c"}, slog.New(slog.DiscardHandler), f.rdb, f.keys)
	require.NoError(t, err)
	ids, err := replica.DeadLetter(ctx, f.stream, f.group, dlq, b.Tampered[0].Letter())
	require.NoError(t, err)
	require.NotEmpty(t, ids[0])
	assert.Empty(t, f.pendingIDs(t))
	stored, err := f.bus.XRange(ctx, dlq, ids[0], ids[0], 1)
	require.NoError(t, err)
	fields := stored[0].Fields
	assert.Equal(t, wide, fields[1])
	i := slices.Index(fields, streambus.DeadLetterFieldsOmitted)
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, strconv.Itoa(3002-streambus.MaxCopiedFields/2), fields[i+1])
	_, findings := check(t, f, dlq, dlq)
	assert.Empty(t, findings, "sealed as written")
}
