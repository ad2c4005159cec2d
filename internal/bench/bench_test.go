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
