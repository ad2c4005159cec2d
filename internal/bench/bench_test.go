package bench

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
)

func TestIDMillis(t *testing.T) {
	assert.EqualValues(t, 1764234004000, idMillis("1764234004000-7"))
	assert.Zero(t, idMillis("garbage"))
}

func TestCPUOfSelf(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	assert.Positive(t, cpuOf(os.Getpid()), "this process has used CPU")
	assert.Zero(t, cpuOf(-1))
}

func TestEventGen(t *testing.T) {
	key, _ := integrity.GenerateKey()
	keys, err := integrity.NewKeyring("k", map[string][]byte{"k": key})
	require.NoError(t, err)
	g := newEventGen(keys, 1)
	for range 100 {
		env, err := g.next("s")
		require.NoError(t, err)
		assert.NotEmpty(t, env.EventID)
		assert.InDelta(t, 380, len(env.Event), 30)
	}
}

func TestReportPrint(t *testing.T) {
	var b strings.Builder
	(&Report{Entries: 10, EventBytes: 380, Rounds: 1, Rate: 100, Results: []Result{
		{Title: "baseline", Throughput: 1000, Ratio: 1, CPU: time.Microsecond},
		{Title: "x", Throughput: 500, Ratio: 0.5, Latency: true, P50: time.Millisecond, P99: 3 * time.Millisecond},
	}}).Print(&b)
	assert.Contains(t, b.String(), "| x")
	assert.Contains(t, b.String(), "1 / 3")
}

func TestReportPrintSinkRows(t *testing.T) {
	var b strings.Builder
	(&Report{Entries: 10, EventBytes: 380, Rounds: 1, Rate: 100, Results: []Result{
		{Title: "stream", Throughput: 1000, Ratio: 1, RedisCPU: 2 * time.Microsecond},
		{Title: "pg", Throughput: 1500, Ratio: 0.5, DestCPU: 7 * time.Microsecond},
		{Title: "syslog — not run: rsyslog is not installed", Missing: "rsyslog is not installed"},
	}}).Print(&b)
	out := b.String()
	assert.Contains(t, out, "| sink server CPU µs/entry")
	assert.Regexp(t, `\| pg +\| 2k +\| 0\.50 +\| 0\.00 +\| — +\| 7\.00 +\|`, out)
	assert.Regexp(t, `\| syslog — not run: rsyslog is not installed +\| — +\| — +\| — +\| — +\| — +\| — +\| — +\| — +\|`, out)
}

func TestParseCPU(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		want       time.Duration
		err        bool
	}{
		{"both", "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250001\r\nused_cpu_sys_children:9.0\r\n", 1750001 * time.Microsecond, false},
		{"missing user", "# CPU\r\nused_cpu_sys:1.5\r\n", 0, true},
		{"garbage", "used_cpu_sys:x\r\nused_cpu_user:1\r\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCPU(tc.info)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestPerEntry(t *testing.T) {
	total, each := perEntry([]time.Duration{time.Second, 0}, []time.Duration{3 * time.Second, time.Second}, 1000)
	assert.Equal(t, 3*time.Millisecond, total)
	assert.Equal(t, []time.Duration{2 * time.Millisecond, time.Millisecond}, each)
	total, each = perEntry(nil, nil, 1000)
	assert.Zero(t, total, "a server the run did not start")
	assert.Nil(t, each)
}

func TestReportPrintClusterAndMemoryRows(t *testing.T) {
	var b strings.Builder
	(&Report{Entries: 10, EventBytes: 380, Rounds: 1, Rate: 100,
		Cluster: []string{"cluster, 3 shards: {bench3}:stream slot 5075 on node 1"},
		Memory:  []MemoryRow{{Title: "envelope v2", Entries: 10, Bytes: 612.4}},
		Results: []Result{
			{Name: "verify", Title: "verify", Throughput: 2000, RedisCPU: 3 * time.Microsecond, NodeCPU: []time.Duration{3 * time.Microsecond}},
			{Name: "cluster-verify-3", Title: "verify — cluster, 3 shards", Shards: 3, Of: "verify", Throughput: 3000, Ratio: 1.5,
				RedisCPU: 6 * time.Microsecond, NodeCPU: []time.Duration{time.Microsecond, 2 * time.Microsecond, 3 * time.Microsecond}},
		}}).Print(&b)
	out := b.String()
	assert.Contains(t, out, "{bench3}:stream slot 5075 on node 1")
	assert.Regexp(t, `\| verify — standalone Redis +\| — +\| 2k +\| 1\.00 +\| 0\.00 +\| 3\.00 +\| 3\.00 +\|`, out)
	assert.Regexp(t, `\| 10 entries, envelope v2 +\| 612 +\|`, out)
	assert.Regexp(t, `\| verify — cluster, 3 shards +\| 3 +\| 3k +\| 1\.50 +\| 0\.00 +\| 6\.00 +\| 1\.00 / 2\.00 / 3\.00 +\|`, out)
}

func TestPeakRSSSelf(t *testing.T) {
	assert.Greater(t, PeakRSS(os.Getpid()), int64(1<<20), "this process holds more than a MiB")
	assert.Zero(t, PeakRSS(-1))
}
