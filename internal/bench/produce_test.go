package bench

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
)

// TestBenchProducerBaselines: the raw v2 baseline appends the producers'
// file as entries with the fields of envelope version 2 and events that
// carry event_id and timestamp, as the producers' entries do; the report
// gives each producer row its ratio to both baselines.
func TestBenchProducerBaselines(t *testing.T) {
	cfg := smallConfig(t, "produce-raw", "produce-raw-v2", "produce-emit")
	rep := runSmall(t, cfg)
	require.Len(t, rep.Results, 3)
	byName := map[string]Result{}
	for _, r := range rep.Results {
		byName[r.Name] = r
		assert.Positive(t, r.Throughput, r.Name)
	}
	raw, v2, emit := byName["produce-raw"], byName["produce-raw-v2"], byName["produce-emit"]
	assert.InDelta(t, v2.Throughput/raw.Throughput, v2.Ratio, 1e-9)
	assert.InDelta(t, emit.Throughput/v2.Throughput, emit.RatioV2, 1e-9)
	assert.InDelta(t, 1, v2.RatioV2, 1e-9)
}

// TestRawV2Entries: ProduceRawV2's entries have envelope version 2's
// fields, each event stamped with an event_id and a timestamp in front of
// the file's members, the prev of each the sig of the one before, every
// sig and event_id its own (1500 entries reach seq 0xf1, which a sig of
// "f"s with the seq's hex digits at the end gives seq 1's sig).
func TestRawV2Entries(t *testing.T) {
	cfg := smallConfig(t)
	rdb := redisClient(t, cfg.RedisURL)
	path := t.TempDir() + "/events.jsonl"
	_, err := writeEventFile(path, 1500)
	require.NoError(t, err)
	n, err := ProduceRawV2(t.Context(), rdb, "rawv2", path)
	require.NoError(t, err)
	assert.Equal(t, 1500, n)
	msgs, err := rdb.XRange(t.Context(), "rawv2", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 1500)
	var lines []string
	require.NoError(t, eachEvent(path, func(line []byte) error { lines = append(lines, string(line)); return nil }))
	prev := ""
	sigs, ids := map[string]int{}, map[string]int{}
	for i, m := range msgs {
		v := m.Values
		assert.Len(t, v, 8)
		assert.Equal(t, "2", v[integrity.FieldVersion])
		assert.Equal(t, integrity.KindEvent, v["kind"])
		assert.Equal(t, i+1, atoi(t, v["seq"].(string)))
		if i > 0 {
			assert.Equal(t, prev, v["prev"])
		}
		prev = v[integrity.FieldSig].(string)
		if j, ok := sigs[prev]; ok {
			assert.Failf(t, "sig given twice", "seq %d has the sig of seq %d: %s", i+1, j, prev)
		}
		sigs[prev] = i + 1
		event := v[integrity.FieldEvent].(string)
		var got map[string]any
		require.NoError(t, json.Unmarshal([]byte(event), &got), event)
		assert.NotEmpty(t, got[integrity.EventIDMember])
		assert.NotEmpty(t, got[integrity.TimestampMember])
		id, _ := got[integrity.EventIDMember].(string)
		if j, ok := ids[id]; ok {
			assert.Failf(t, "event_id given twice", "seq %d has the event_id of seq %d: %s", i+1, j, id)
		}
		ids[id] = i + 1
		var want map[string]any
		require.NoError(t, json.Unmarshal([]byte(lines[i]), &want))
		for k, w := range want {
			assert.Equal(t, w, got[k])
		}
		if t.Failed() {
			return
		}
	}
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}
