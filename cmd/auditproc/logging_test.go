package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLogDurationsInSeconds: durations are logged as seconds, a number, with
// the key saying so.
func TestLogDurationsInSeconds(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf, "json", "info").Info("x", slog.Duration("retry_in", 250*time.Millisecond), slog.Duration("took_seconds", 2*time.Second))
	var m map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
	assert.Equal(t, 0.25, m["retry_in_seconds"])
	assert.Equal(t, 2.0, m["took_seconds"])
	assert.NotContains(t, m, "retry_in")
}

// TestRedisClientLogsAreJSON: go-redis's log lines come out as JSON lines.
func TestRedisClientLogsAreJSON(t *testing.T) {
	var buf bytes.Buffer
	newRedisLogger(&buf).Printf(context.Background(), "redis: %s:%d: connection pool: failed to dial after %d attempts: %v\n", "main.go", 10, 5, "refused")
	var m map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m), buf.String())
	assert.Equal(t, "WARN", m["level"])
	assert.Equal(t, "redis_client", m["msg"])
	assert.Contains(t, m["detail"], "failed to dial after 5 attempts: refused")
}
