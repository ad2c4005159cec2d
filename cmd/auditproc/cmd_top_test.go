package main

import (
	"math"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

func TestTopQuantile(t *testing.T) {
	before := map[float64]float64{0.001: 0, 0.01: 0, 0.1: 0, 1: 0, math.Inf(1): 0}
	// 100 observations: 90 under 1 ms, 9 between 1 and 10 ms, 1 between 10 and 100 ms.
	after := map[float64]float64{0.001: 90, 0.01: 99, 0.1: 100, 1: 100, math.Inf(1): 100}
	p50, ok := quantile(0.5, before, after)
	assert.True(t, ok)
	assert.InDelta(t, 0.5*0.001*100/90, p50, 1e-9)
	p99, _ := quantile(0.99, before, after)
	assert.InDelta(t, 0.01, p99, 1e-9)
	_, ok = quantile(0.5, after, after)
	assert.False(t, ok, "no observations in between")
}

// TestCompletion: the scripts are valid shell, and the candidates follow the
// command tree and each command's flags.
func TestCompletion(t *testing.T) {
	complete := func(words ...string) []string {
		out, errOut, code := runCLI(t, append([]string{"__complete"}, words...)...)
		require.Equal(t, exitOK, code, errOut)
		return strings.Fields(out)
	}
	top := complete()
	for _, want := range []string{"run", "config", "dlq", "test", "top", "completion", "version"} {
		assert.Contains(t, top, want)
	}
	assert.NotContains(t, top, "__complete")
	assert.Equal(t, []string{"check"}, complete("config"))
	assert.Contains(t, complete("dlq", "replay", "--config", "x.yaml"), "--all")
	assert.Contains(t, complete("config", "check"), "--print")
	assert.Contains(t, complete("run"), "--watch")

	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, _, code := runCLI(t, "completion", sh)
		require.Equal(t, exitOK, code)
		assert.Contains(t, out, "auditproc __complete")
		if path, err := exec.LookPath(sh); err == nil && sh == "bash" {
			cmd := exec.Command(path, "-n")
			cmd.Stdin = strings.NewReader(out)
			b, err := cmd.CombinedOutput()
			assert.NoError(t, err, "%s -n: %s", sh, b)
		}
	}
	_, _, code := runCLI(t, "completion", "tcsh")
	assert.Equal(t, exitUsage, code)
}

// TestTopRefreshes: without --once, top draws a frame every interval (from a
// real Redis; the replica's /metrics does not answer and is shown so), one
// after another with a blank line between when the output is no terminal,
// and the end of its context (SIGINT or SIGTERM in main) ends it with exit 0.
func TestTopRefreshes(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("AUDITPROC_CONFIG", "")
	t.Setenv("AUDITPROC_REDIS_URL", srv.URL())
	const header = "auditproc top — "
	out, code := runLive(t, func(out string) bool { return strings.Count(out, header) >= 2 },
		"top", "--interval", "20ms", "--stream", "st:top", "--metrics", "127.0.0.1:1")
	assert.Equal(t, exitOK, code)
	assert.True(t, strings.HasPrefix(out, header), out)
	assert.Equal(t, strings.Count(out, header)-1, strings.Count(out, "\n\n"+header), "frames are separated by a blank line:\n%s", out)
	assert.NotContains(t, out, clearScreen, "no terminal: the screen is never cleared")
	assert.Contains(t, out, "127.0.0.1:1  unreachable")
}
