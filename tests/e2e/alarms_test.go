package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

// TestEntriesDeletedWhilePendingRaiseAnAlarm deletes entries that are
// pending (their plugin keeps failing): the reclaimer finds them gone and
// reports each id in the log and the metrics, instead of dropping them
// silently.
func TestEntriesDeletedWhilePendingRaiseAnAlarm(t *testing.T) {
	e := newEnv(t)
	ids := e.emit(stream, `{"actor":"a","action":"x"}`, `{"actor":"b","action":"y"}`)
	cfg := e.config(pipeline(`{"fail_first": 100}`))
	p := e.start("run", "--config", cfg)
	waitFor(t, 30*time.Second, "both entries to be pending", func() bool {
		p, err := e.rdb.XPending(context.Background(), stream, group).Result()
		return err == nil && p.Count == 2
	})

	require.NoError(t, e.rdb.XDel(context.Background(), stream, ids...).Err())
	waitFor(t, 30*time.Second, "the alarm", func() bool { return len(p.logLines("pending_entries_deleted")) > 0 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	var reported []string
	for _, l := range p.logLines("pending_entries_deleted") {
		for _, id := range l["entry_ids"].([]any) {
			reported = append(reported, id.(string))
		}
	}
	assert.ElementsMatch(t, ids, reported)
	assert.Zero(t, e.pending(stream, group), "Redis drops deleted entries from the pending list")
}

// TestDeletedStreamIsRecreatedWithOneAlarm deletes the stream (and with it
// the group) under a running processor: it recreates the group, logs the
// alarm once rather than flooding, and processes what comes next.
func TestDeletedStreamIsRecreatedWithOneAlarm(t *testing.T) {
	e := newEnv(t)
	e.emitNumbered(stream, 10, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))
	metrics := freeAddr(t)
	p := e.start("run", "--config", cfg, "--metrics-addr", metrics)
	waitFor(t, 30*time.Second, "the first events", func() bool { return e.xlen(out) == 10 })

	require.NoError(t, e.rdb.Del(context.Background(), stream).Err())
	time.Sleep(time.Second) // several reads and sweeps meet the missing group
	later := e.emitNumbered(stream, 5, "")
	waitFor(t, 30*time.Second, "the events after the deletion", func() bool { return e.xlen(out) == 15 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	counts := countByEventID(e.sinkRecords(out))
	for _, id := range later {
		assert.Equal(t, 1, counts[id])
	}
	alarms := p.logLines("consumer_group_recreated")
	assert.NotEmpty(t, alarms)
	assert.LessOrEqual(t, len(alarms), 2, "an alarm, not a flood")
}

// TestEmitStatusAndKeygenCommands drives the operator commands against a
// real Redis: emit refuses a bad file whole, writes a good one, and status
// reports the group in JSON.
func TestEmitStatusAndKeygenCommands(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(pipeline(`{"sink": "out"}`))
	bad := e.dir + "/bad.jsonl"
	require.NoError(t, writeFile(bad, "{\"actor\":\"a\"}\n[1,2]\n"))
	code, _, stderr := e.run(20*time.Second, "emit", "--config", cfg, "--file", bad)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "line 2: rule object: not a JSON object")
	assert.Zero(t, e.xlen(stream), "nothing was written")

	good := e.dir + "/good.jsonl"
	require.NoError(t, writeFile(good, "{\"actor\":\"a\",\"action\":\"x\"}\n\n{\"actor\":\"b\",\"action\":\"y\"}\n"))
	code, stdout, stderr := e.run(20*time.Second, "emit", "--config", cfg, "--file", good)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "emitted 2 event(s)")
	assert.EqualValues(t, 3, e.xlen(stream), "two events and the closing checkpoint of emit's chain (envelope version 2)")

	code, _, _ = e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle", "--consumer", "c1")
	require.Equal(t, 0, code)
	code, stdout, stderr = e.run(20*time.Second, "status", "--config", cfg, "--json")
	require.Equal(t, 0, code, stderr)
	var st struct {
		Length int64 `json:"length"`
		Groups []struct {
			Name      string `json:"name"`
			Lag       int64  `json:"lag"`
			Pending   int64  `json:"pending"`
			Consumers []struct {
				Name string `json:"name"`
			} `json:"consumers"`
		} `json:"groups"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &st))
	assert.EqualValues(t, 3, st.Length)
	require.Len(t, st.Groups, 1)
	assert.Equal(t, group, st.Groups[0].Name)
	assert.Zero(t, st.Groups[0].Lag)
	assert.Zero(t, st.Groups[0].Pending)
	assert.Equal(t, "c1", st.Groups[0].Consumers[0].Name)

	keys := e.dir + "/new-keys"
	code, _, stderr = e.run(10*time.Second, "keygen", "--id", "k2", "--out", keys)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = e.run(10*time.Second, "keygen", "--id", "k2", "--out", keys)
	assert.Equal(t, 2, code, "a duplicate key id is refused")
	assert.Contains(t, stderr, `already has a key "k2"`)
	assert.False(t, strings.Contains(stderr, "hex:"), "no key material in errors")
}

// TestNonDurableRedisIsWarnedOrRefused starts Redis with an eviction policy
// that could drop audit entries: run warns, and with
// --require-durable-redis refuses to start (exit 1) saying why.
func TestNonDurableRedisIsWarnedOrRefused(t *testing.T) {
	e := newEnv(t, redistest.WithArgs("--maxmemory-policy", "allkeys-lru"))
	cfg := e.config(pipeline(`{}`))

	code, _, stderr := e.run(60*time.Second, "run", "--config", cfg, "--require-durable-redis")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `maxmemory-policy is "allkeys-lru"`)

	p := e.start("run", "--config", cfg, "--stop-when-idle")
	require.Equal(t, 0, p.wait(60*time.Second))
	warnings := p.logLines("redis_not_durable")
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0]["problem"], "noeviction")
}
