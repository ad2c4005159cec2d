package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

// TestEmitWaitsForReplicas: with redis.min_replicas_acked, emit succeeds
// once the replica holds the events, and fails, saying so, while the
// replica does not confirm them; the same file emitted again once it is
// back succeeds without writing anything twice.
func TestEmitWaitsForReplicas(t *testing.T) {
	testKeyring(t)
	master := redistest.Start(t, redistest.WithBackend(redistest.Process))
	replica := redistest.StartReplica(t, master)
	stream := fmt.Sprintf("emit:replicas:%d", time.Now().UnixNano())
	t.Setenv("AUDITPROC_REDIS_URL", master.URL())
	t.Setenv("AUDITPROC_REDIS_IO_TIMEOUT", "1s")
	t.Setenv("AUDITPROC_REDIS_MIN_REPLICAS_ACKED", "1")
	t.Setenv("AUDITPROC_REDIS_MIN_REPLICAS_TIMEOUT", "200ms")
	ctx := context.Background()

	_, errOut, code := runCLI(t, "emit", "--stream", stream, "--quiet", `{"action":"login"}`)
	require.Zero(t, code, errOut)

	require.NoError(t, replica.Pause())
	t.Cleanup(func() { _ = replica.Resume() })
	file := writeFile(t, t.TempDir(), "events.jsonl", `{"action":"logout"}`+"\n")
	_, errOut, code = runCLI(t, "emit", "--stream", stream, "--quiet", "--timeout", "1s", "--file", file)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not confirmed by 1 replica(s) (redis.min_replicas_acked)")
	assert.Contains(t, errOut, "not replicated")

	require.NoError(t, replica.Resume())
	_, errOut, code = runCLI(t, "emit", "--stream", stream, "--quiet", "--file", file)
	require.Zero(t, code, errOut)
	n, err := replica.Client(t).XLen(ctx, stream).Result()
	require.NoError(t, err)
	m, err := master.Client(t).XLen(ctx, stream).Result()
	require.NoError(t, err)
	assert.Equal(t, m, n, "the replica holds the stream")
	evs, err := master.Client(t).XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	logouts := 0
	for _, e := range evs {
		if s, _ := e.Values["event"].(string); e.Values["kind"] == "event" && strings.Contains(s, `"logout"`) {
			logouts++
		}
	}
	assert.Equal(t, 1, logouts, "the event once")
}
