package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// twoSinks is the e2e plugin with two stream sinks granted; conf picks the
// one it emits to.
func twoSinks(conf string) string {
	return `sinks:
  out: {type: stream, stream: audit:out}
  out2: {type: stream, stream: audit:out2}
plugins:
  - name: e2e
    path: $WASM/e2e-go.wasm
    sinks: [out, out2]
    config: ` + conf + "\n"
}

// TestSighupNeverKills sends SIGHUP to run at every stage (while it starts
// and loads its plugins, while it processes, with a broken configuration):
// the process never exits on it; SIGTERM then stops it with 0.
func TestSighupNeverKills(t *testing.T) {
	e := newEnv(t)
	e.emitNumbered(stream, 2000, "")
	cfg := e.config(twoSinks(`{"sink": "out"}`))

	p := e.start("run", "--config", cfg, "--consumer", "replica-a")
	alive := func(stage string) {
		select {
		case <-p.done:
			t.Fatalf("SIGHUP %s ended the process (exit %d); stderr:\n%s", stage, p.cmd.ProcessState.ExitCode(), tail(p.stderr.String(), 20))
		default:
		}
	}
	// While it starts: the first SIGHUPs arrive while the configuration
	// and plugins load, before the processor runs. (Before the Go runtime
	// has run the program's initialization, no Go program can catch a
	// signal: give it that long.)
	time.Sleep(150 * time.Millisecond)
	for range 5 {
		p.signal(syscall.SIGHUP)
		time.Sleep(10 * time.Millisecond)
	}
	alive("during start")
	waitFor(t, 60*time.Second, "processing to start", func() bool { return len(p.logLines("processor_started")) == 1 })
	p.signal(syscall.SIGHUP)
	waitFor(t, 30*time.Second, "a reload", func() bool { return len(p.logLines("config_reloaded")) >= 1 })
	alive("while processing")

	// A broken configuration: the reload fails, the pipeline runs on. (A
	// SIGHUP that came during the reload above is one more reload, which
	// may read the broken file too: one failure or two.)
	require.NoError(t, os.WriteFile(cfg, []byte("plugins: [\n"), 0o600))
	p.signal(syscall.SIGHUP)
	waitFor(t, 30*time.Second, "the failed reload", func() bool { return len(p.logLines("config_reload_failed")) >= 1 })
	alive("with a broken configuration")
	failed := p.logLines("config_reload_failed")[0]
	assert.Contains(t, failed["error"], "not valid YAML")

	waitFor(t, 60*time.Second, "the stream to drain", func() bool { return e.records(out) == 2000 })
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))
	assert.Len(t, countByEventID(e.sinkRecords(out)), 2000)
}

// TestHotReloadUnderLoad reloads the pipeline several times while entries
// flow: the e2e plugin switches the sink it emits to (out, out2, out, …)
// with each reload. Every entry is emitted exactly once across the two
// sinks, nothing is pending at the end, and both sinks got entries: the
// reloads took effect mid-stream without losing or doubling anything.
func TestHotReloadUnderLoad(t *testing.T) {
	e := newEnv(t)
	const n = 20000
	ids := e.emitNumbered(stream, n, "")
	cfg := e.config(twoSinks(`{"sink": "out"}`))
	body, err := os.ReadFile(cfg)
	require.NoError(t, err)

	p := e.start("run", "--config", cfg, "--consumer", "replica-a")
	waitFor(t, 60*time.Second, "the load to start", func() bool { return e.xlen(out) >= 500 })
	reloads := 0
	for i := 1; i <= 6 && e.xlen(out)+e.xlen("audit:out2") < n-2000; i++ {
		sink := "out2"
		if i%2 == 0 {
			sink = "out"
		}
		text := strings.Replace(string(body), `{"sink": "out"}`, `{"sink": "`+sink+`"}`, 1)
		require.NoError(t, os.WriteFile(cfg, []byte(text), 0o600))
		p.signal(syscall.SIGHUP)
		reloads++
		waitFor(t, 30*time.Second, "the reload", func() bool { return len(p.logLines("config_reloaded")) >= reloads })
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, 120*time.Second, "every entry to be processed", func() bool {
		return e.xlen(out)+e.xlen("audit:out2") >= n && e.pending(stream, group) == 0
	})
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))

	first, second := e.sinkRecords(out), e.sinkRecords("audit:out2")
	counts := countByEventID(append(first, second...))
	lost, duplicates, firstWrong := 0, 0, ""
	for _, id := range ids {
		switch c := counts[id]; {
		case c == 0:
			lost++
		case c > 1:
			duplicates += c - 1
		}
		if counts[id] != 1 && firstWrong == "" {
			firstWrong = id
		}
	}
	assert.Zero(t, lost, "events lost across the reloads (the first wrong: %s)", firstWrong)
	assert.Zero(t, duplicates, "events processed twice across the reloads (the first wrong: %s)", firstWrong)
	assert.Len(t, counts, n)
	assert.Zero(t, e.pending(stream, group))
	assert.Zero(t, e.xlen(dlq))
	assert.NotEmpty(t, first)
	assert.NotEmpty(t, second, "the reloaded pipeline ran")
	assert.Empty(t, p.logLines("config_reload_failed"))
	t.Logf("%d events, %d reloads: %d emitted to out, %d to out2; lost %d, duplicates %d", n, reloads, len(first), len(second), lost, duplicates)
}
