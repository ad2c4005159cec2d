package main

import (
	"context"
	"flag"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// TestStatusAndDLQFlags: status on a stream with no entries yet works;
// status --group shows that group only; dlq list --stream lists the dead
// letters of that audit stream only; flags after positional arguments count.
func TestStatusAndDLQFlags(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	t.Setenv("AUDITPROC_CONFIG", "")
	t.Setenv("AUDITPROC_REDIS_URL", srv.URL())

	out, errOut, code := runCLI(t, "status", "--stream", "never:written")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "stream never:written: 0 entries")

	require.NoError(t, rdb.XGroupCreateMkStream(ctx, "st:a", "g1", "$").Err())
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, "st:a", "g2", "$").Err())
	out, errOut, code = runCLI(t, "status", "--stream", "st:a", "--group", "g2")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "group g2")
	assert.NotContains(t, out, "group g1")
	_, errOut, code = runCLI(t, "status", "--stream", "st:a", "--group", "nope")
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, `no consumer group "nope"`)

	for i, origin := range []string{"st:a", "st:b", "st:a"} {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: "st:dead", Values: map[string]any{
			integrity.FieldEvent:               `{"event_id":"e` + string(rune('0'+i)) + `"}`,
			streambus.DeadLetterOriginalStream: origin,
			streambus.DeadLetterOriginalID:     "1-" + string(rune('0'+i)),
			streambus.DeadLetterReason:         "rejected",
		}}).Err())
	}
	t.Setenv("AUDITPROC_DEAD_LETTER_STREAM", "st:dead")
	out, errOut, code = runCLI(t, "dlq", "list", "--stream", "st:a")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "2 dead-lettered entries")
	assert.Contains(t, out, "1-0")
	assert.Contains(t, out, "1-2")
	assert.NotContains(t, out, "1-1")
	out, _, code = runCLI(t, "dlq", "list")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "3 dead-lettered entries")
}

func TestFlagsAfterPositionals(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	cfg := fs.String("config", "", "")
	all := fs.Bool("all", false, "")
	pos, err := parseInterspersed(fs, strings.Fields("ID1 --config X ID2 --all -- --not-a-flag"))
	require.NoError(t, err)
	assert.Equal(t, []string{"ID1", "ID2", "--not-a-flag"}, pos)
	assert.Equal(t, "X", *cfg)
	assert.True(t, *all)
}
