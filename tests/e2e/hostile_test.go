package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/wasmtest"
)

// hostileModule is one module of plugins/fixtures/hostile, with what its
// header comment says must happen to it.
type hostileModule struct {
	name   string // file name without extension
	wasm   string // the built module
	expect string // "refused" or "fails-own-events"
}

// The hostile corpus's expectations (";; expect:" in each file's header).
const (
	expectRefused        = "refused"          // refused at load by every command
	expectFailsOwnEvents = "fails-own-events" // loads; fails only the events containing "boom"
)

// hostileCorpus reads every file of plugins/fixtures/hostile, whatever adds
// it: a file without a known expectation fails the test.
func hostileCorpus(t *testing.T) []hostileModule {
	t.Helper()
	dir := filepath.Join(wasmtest.Root(t), "plugins", "fixtures", "hostile")
	files, err := os.ReadDir(dir)
	require.NoError(t, err)
	built := filepath.Join(wasmtest.Dir(t), "hostile")
	var out []hostileModule
	for _, f := range files {
		ext := filepath.Ext(f.Name())
		if ext != ".wat" && ext != ".hex" {
			continue
		}
		m := hostileModule{name: strings.TrimSuffix(f.Name(), ext), expect: headerValue(t, filepath.Join(dir, f.Name()), "expect")}
		m.wasm = filepath.Join(built, m.name+".wasm")
		require.Contains(t, []string{expectRefused, expectFailsOwnEvents}, m.expect, "%s: a hostile module needs an ';; expect:' line", f.Name())
		require.FileExists(t, m.wasm)
		out = append(out, m)
	}
	require.NotEmpty(t, out)
	return out
}

// headerValue returns the value of the ";; key: value" line of a file.
func headerValue(t *testing.T, path, key string) string {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), ";; "+key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// measured is how one command ran: exit code, output, wall time, peak RSS.
type measured struct {
	code           int
	stdout, stderr string
	wall           time.Duration
	peakRSS        int64 // bytes
}

// runMeasured runs the binary with stdin to completion, within timeout.
func runMeasured(t *testing.T, timeout time.Duration, stdin string, env []string, args ...string) measured {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	peak := make(chan int64, 1)
	go func() { peak <- peakRSSWhile(cmd.Process.Pid, exited) }()
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("auditproc %v did not exit within %s; stderr:\n%s", args, timeout, tail(stderr.String(), 30))
	}
	m := measured{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String(), wall: time.Since(start)}
	m.peakRSS = <-peak
	return m
}

// The bound on a process's peak RSS the corpus is held to: the process's
// own (Go runtime, Redis client, the compiled module, buffers) plus, per
// instance of the hostile plugin, the per-instance bound of docs/plugins.md
// ("The bound per instance") for the default 32 MiB memory cap, and for
// each instance that runs events its call stack (wazero's ceiling, about
// 100 MiB: a recursing guest stopped late by a loaded machine gets there).
// run has two workers and the instance Load makes; plugin test one of each.
const (
	processBase      = 160 << 20
	perInstanceBound = 32<<20 + 8<<20 + 16<<20 + 8<<20
	callStackBound   = 100 << 20
	runRSSBound      = processBase + 3*perInstanceBound + 2*callStackBound
	testRSSBound     = processBase + 2*perInstanceBound + callStackBound
)

// TestHostileCorpus runs every module of plugins/fixtures/hostile through
// plugin check, plugin test and run (real binary, real Redis): a module is
// either refused at load by all three, or loads and fails only the events
// that trigger it (they contain "boom"), stopped near its 100 ms deadline,
// while the host stays up, answers /healthz, acks the good entries and
// dead-letters only the hostile ones, its RSS within the bound.
func TestHostileCorpus(t *testing.T) {
	corpus := hostileCorpus(t)
	e := newEnv(t)
	const good, bad = `{"event_id":"good-1","action":"read"}`, `{"event_id":"bad-1","action":"boom"}`
	var table []string
	for _, m := range corpus {
		t.Run(m.name, func(t *testing.T) {
			check := runMeasured(t, 60*time.Second, "", nil, "plugin", "check", m.wasm)
			test := runMeasured(t, 60*time.Second, good+"\n"+bad+"\n"+good+"\n", nil, "plugin", "test", m.wasm)
			if m.expect == expectRefused {
				assert.Equal(t, 2, check.code, "plugin check refuses it:\n%s", check.stderr)
				assert.Contains(t, check.stdout, "result:   refused")
				assert.Equal(t, 2, test.code, "plugin test refuses it:\n%s", test.stderr)
				cfg := e.config(hostilePipeline(m.wasm))
				code, _, stderr := e.run(60*time.Second, "config", "check", cfg)
				assert.Equal(t, 2, code, "config check refuses it:\n%s", stderr)
				code, _, stderr = e.run(60*time.Second, "run", "--config", cfg, "--stop-when-idle")
				assert.Equal(t, 2, code, "run refuses it:\n%s", stderr)
				table = append(table, fmt.Sprintf("| %s | refused at load | - | %d MiB |", m.name, check.peakRSS>>20))
				return
			}
			require.Equal(t, 0, check.code, "plugin check loads it:\n%s", check.stderr)
			require.Equal(t, 0, test.code, "plugin test:\n%s", test.stderr)
			lines := testLines(t, test.stdout)
			require.Len(t, lines, 3, test.stdout)
			assert.Equal(t, "ok", lines[0]["verdict"], "a good event passes")
			assert.Equal(t, "retry", lines[1]["verdict"], "the hostile event fails: %v", lines[1])
			assert.NotEmpty(t, lines[1]["error"])
			assert.Equal(t, "ok", lines[2]["verdict"], "the next good event gets a fresh instance")
			stop := time.Duration(lines[1]["duration_us"].(float64)) * time.Microsecond
			assert.Less(t, test.peakRSS, int64(testRSSBound), "plugin test peak RSS")

			run := hostileRun(t, e, m)
			verdict := "within 2x+50ms"
			if stop > 2*100*time.Millisecond+50*time.Millisecond {
				verdict = "MISSED 2x+50ms"
			}
			cause := fmt.Sprint(lines[1]["error"])
			if _, after, ok := strings.Cut(cause, ": "); ok {
				cause = after // drop the plugin's name
			}
			cause, _, _ = strings.Cut(cause, "\n")
			table = append(table, fmt.Sprintf("| %s | %s (%s) | %s | test %d MiB, run %d MiB |",
				m.name, stop.Round(time.Millisecond), verdict, cause, test.peakRSS>>20, run.peakRSS>>20))
		})
	}
	sort.Strings(table)
	t.Logf("hostile corpus (deadline 100 ms, memory 32 MiB):\n| module | stopped after | error | peak RSS |\n|---|---|---|---|\n%s", strings.Join(table, "\n"))
}

// hostilePipeline is a configuration whose one plugin is wasm.
func hostilePipeline(wasm string) string {
	return fmt.Sprintf("plugins:\n  - name: hostile\n    path: %s\n", wasm)
}

// testLines decodes plugin test's JSON lines.
func testLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		lines = append(lines, m)
	}
	return lines
}

// hostileRun runs `run` over good and hostile entries with module m as the
// pipeline, polling /healthz throughout, and checks that the good entries
// are acked and only the hostile ones dead-lettered.
func hostileRun(t *testing.T, e *env, m hostileModule) measured {
	t.Helper()
	streamName := "hostile:" + m.name
	dead := streamName + ":dead"
	var goodEvents, badEvents []string
	for i := range 8 {
		goodEvents = append(goodEvents, fmt.Sprintf(`{"event_id":"good-%d","action":"read"}`, i))
	}
	for i := range 2 {
		badEvents = append(badEvents, fmt.Sprintf(`{"event_id":"bad-%d","action":"boom"}`, i))
	}
	e.emit(streamName, goodEvents[:4]...)
	badIDs := e.emit(streamName, badEvents...)
	e.emit(streamName, goodEvents[4:]...)
	cfg := e.config(fmt.Sprintf("stream: {name: %q}\ndead_letter: {stream: %q}\n", streamName, dead) + hostilePipeline(m.wasm))

	metrics := freeAddr(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var healthFailures []string
	wg.Go(func() {
		// Generous: the machine that runs the suite may be loaded many
		// times over; a host that froze would miss every poll.
		client := http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			resp, err := client.Get("http://" + metrics + "/healthz")
			if err != nil {
				// Not listening yet, or gone: run exits by itself once the
				// stream is drained (a crash shows in its exit code), and a
				// poll in flight then finds the connection reset.
				if !strings.Contains(err.Error(), "connection refused") && !strings.Contains(err.Error(), "connection reset") &&
					!strings.HasSuffix(err.Error(), "EOF") {
					healthFailures = append(healthFailures, err.Error())
				}
				continue
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				healthFailures = append(healthFailures, resp.Status)
			}
		}
	})
	run := runMeasured(t, 120*time.Second, "", []string{"AUDITPROC_HMAC_KEYS_FILE=" + e.keysFile},
		"run", "--config", cfg, "--stop-when-idle", "--metrics-addr", metrics)
	close(stop)
	wg.Wait()
	require.Equal(t, 0, run.code, "run:\n%s", tail(run.stderr, 40))
	assert.Empty(t, healthFailures, "/healthz answered throughout")
	assert.Zero(t, e.pending(streamName, group), "every entry acked or dead-lettered")
	var lettered []string
	for _, l := range e.deadLetters(dead) {
		lettered = append(lettered, fmt.Sprint(l.Values["original_id"]))
	}
	assert.ElementsMatch(t, badIDs, lettered, "only the hostile entries are dead-lettered")
	assert.Less(t, run.peakRSS, int64(runRSSBound), "run peak RSS")
	return run
}

// TestSIGTERMStopsRunDuringHostilePlugin: SIGTERM ends run promptly while
// a plugin that never returns on its events is running.
func TestSIGTERMStopsRunDuringHostilePlugin(t *testing.T) {
	e := newEnv(t)
	var events []string
	for i := range 50 {
		events = append(events, fmt.Sprintf(`{"event_id":"bad-%d","action":"boom"}`, i))
	}
	e.emit(stream, events...)
	cfg := e.config(hostilePipeline(filepath.Join(wasmtest.Dir(t), "hostile", "loop.wasm")))
	p := e.start("run", "--config", cfg)
	waitFor(t, 60*time.Second, "the hostile plugin to run", func() bool {
		return strings.Contains(p.stderr.String(), "plugin_instance_discarded")
	})
	start := time.Now()
	p.signal(syscall.SIGTERM)
	code := p.wait(30 * time.Second)
	took := time.Since(start)
	assert.Equal(t, 0, code, tail(p.stderr.String(), 20))
	assert.Less(t, took, 5*time.Second, "run stopped promptly")
	t.Logf("run stopped %s after SIGTERM", took)
}
