package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/audit"
)

// emitEnv runs `auditproc emit args...` against the test's Redis (through
// the environment), with stdin as standard input.
func (e *env) emitCmd(stdin []byte, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"emit"}, args...)...)
	cmd.Env = append(os.Environ(), "AUDITPROC_HMAC_KEYS_FILE="+e.keysFile, "AUDITPROC_REDIS_URL="+e.redis.URL(),
		"AUDITPROC_REDIS_IO_TIMEOUT=500ms", "AUDITPROC_REDIS_DIAL_TIMEOUT=500ms")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd
}

func (e *env) emitRun(stdin []byte, args ...string) (int, string, string) {
	e.t.Helper()
	cmd := e.emitCmd(stdin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		e.t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// writeNumberedEvents writes n JSON lines {"n":i,...}, each about size
// bytes, to path, streaming (the test process stays small: a child's peak
// RSS counts the memory of the process that started it).
func writeNumberedEvents(t *testing.T, path string, n, size int) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	w := bufio.NewWriter(f)
	pad := strings.Repeat("x", max(size-60, 0))
	for i := range n {
		fmt.Fprintf(w, `{"n":%d,"actor":"u-%d","action":"read","pad":"%s"}`+"\n", i, i%97, pad)
	}
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
}

// streamNumbers returns the n member of every event of the stream, in
// stream order, and how many times each event id appears; the producers'
// chain checkpoints are left out.
func (e *env) streamNumbers(stream string) ([]int, map[string]int) {
	e.t.Helper()
	var ns []int
	ids := map[string]int{}
	start := "-"
	for {
		msgs, err := e.rdb.XRangeN(context.Background(), stream, start, "+", 5000).Result()
		require.NoError(e.t, err)
		for _, m := range msgs {
			if m.Values["kind"] == "checkpoint" {
				continue
			}
			var ev struct {
				N       int    `json:"n"`
				EventID string `json:"event_id"`
			}
			require.NoError(e.t, json.Unmarshal([]byte(m.Values["event"].(string)), &ev))
			ns = append(ns, ev.N)
			ids[ev.EventID]++
		}
		if len(msgs) < 5000 {
			return ns, ids
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

func requireOnceInOrder(t *testing.T, ns []int, ids map[string]int, n int) {
	t.Helper()
	require.Len(t, ns, n, "every event once")
	for i, v := range ns {
		if v != i {
			t.Fatalf("stream position %d holds event %d: not in order", i, v)
		}
	}
	for id, c := range ids {
		require.Equal(t, 1, c, "event id %s", id)
	}
}

// TestEmitFileRefusedWhole: a line that fails any rule signing applies,
// however late in the file, refuses the whole file before anything is
// written: exit 2, and the error names the line and the rule (and the
// limit).
func TestEmitFileRefusedWhole(t *testing.T) {
	e := newEnv(t)
	good := `{"actor":"a","action":"x"}` + "\n"
	big := strings.Repeat("y", 1<<20)
	for _, tc := range []struct {
		name, line string
		want       []string
	}{
		{"null", `null`, []string{"rule object"}},
		{"numeric event id", `{"event_id":5}`, []string{"rule event_id", "non-empty string"}},
		{"empty event id", `{"event_id":""}`, []string{"rule event_id"}},
		{"event id twice", `{"event_id":"a","event_id":"b"}`, []string{"rule duplicate_member", "appears twice"}},
		{"bad timestamp", `{"timestamp":"last tuesday"}`, []string{"rule timestamp", "RFC 3339"}},
		{"invalid UTF-8", "{\"a\":\"\xff\xfe\"}", []string{"rule utf8"}},
		{"not JSON", `{"a":`, []string{"rule json"}},
		{"over 1 MiB once stamped", `{"a":"` + big[:1<<20-40] + `"}`, []string{"rule size", "once event_id and timestamp are added", "1 MiB"}},
		{"a 2 MB line", `{"a":"` + big + big + `"}`, []string{"longer than the limit", "1 MiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := []byte(good + good + "\n" + good + tc.line + "\n" + good)
			path := filepath.Join(e.dir, "bad.jsonl")
			require.NoError(t, os.WriteFile(path, content, 0o600))
			for _, src := range []string{"file", "stdin"} {
				var code int
				var stderr string
				if src == "file" {
					code, _, stderr = e.emitRun(nil, "--file", path)
				} else {
					code, _, stderr = e.emitRun(content, "--file", "-")
				}
				assert.Equal(t, 2, code, "%s: %s", src, stderr)
				assert.Contains(t, stderr, "line 5", src)
				for _, w := range tc.want {
					assert.Contains(t, stderr, w, src)
				}
				assert.Contains(t, stderr, "nothing was written")
				assert.Zero(t, e.xlen(stream), "%s: nothing was written", src)
			}
		})
	}
}

// TestEmitRerunNoDuplicates: emit is killed part-way through a file; the
// same command again writes what is missing, every event once, in order,
// with the ids the first run gave; a third run writes nothing.
func TestEmitRerunNoDuplicates(t *testing.T) {
	e := newEnv(t)
	const n = 60000
	path := filepath.Join(e.dir, "events.jsonl")
	writeNumberedEvents(t, path, n, 200)

	cmd := e.emitCmd(nil, "--file", path)
	require.NoError(t, cmd.Start())
	waitFor(t, 30*time.Second, "the first events", func() bool { return e.xlen(stream) >= 2000 })
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	// Redis may still run scripts the killed process had pipelined: let
	// the stream settle (the same length for a second) before counting.
	for last, same := int64(-1), 0; same < 3; time.Sleep(300 * time.Millisecond) {
		n := e.xlen(stream)
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	firstNs, firstIDs := e.streamNumbers(stream)
	part := len(firstNs)
	require.Less(t, part, n, "killed part-way")

	code, stdout, stderr := e.emitRun(nil, "--file", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("emitted %d event(s)", n))
	assert.Contains(t, stdout, fmt.Sprintf("%d already there", part))
	ns, ids := e.streamNumbers(stream)
	requireOnceInOrder(t, ns, ids, n)
	for id := range firstIDs {
		assert.Contains(t, ids, id, "the re-run gave the same ids")
	}
	// The re-run's chain starts with the first event Redis lacked: no gap,
	// break or replay. (The killed run never closed its chain: a missing
	// tail, once its checkpoint interval has passed, is the truth.)
	_, r := e.verifyJSON("--stream", stream)
	for _, f := range r.Findings {
		assert.Equal(t, "missing_tail", f.Kind, "%+v", f)
	}

	code, stdout, stderr = e.emitRun(nil, "--file", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("0 written, %d already there", n))
	ns, _ = e.streamNumbers(stream)
	assert.Len(t, ns, n)
}

// TestEmitConstantMemory: a file many times larger than the memory emit
// uses goes through whole.
func TestEmitConstantMemory(t *testing.T) {
	e := newEnv(t)
	const n, size = 100000, 1500
	path := filepath.Join(e.dir, "big.jsonl")
	writeNumberedEvents(t, path, n, size)
	debug.FreeOSMemory()
	fi, err := os.Stat(path)
	require.NoError(t, err)

	cmd := e.emitCmd(nil, "--file", path)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	var err2 error
	go func() { err2 = cmd.Wait(); close(exited) }()
	rss := peakRSSWhile(cmd.Process.Pid, exited)
	require.NoError(t, err2, errb.String())
	t.Logf("file %d MiB, peak RSS %d MiB", fi.Size()>>20, rss>>20)
	assert.Less(t, rss, fi.Size()/2, "emit holds a bounded part of the file")
	assert.Less(t, rss, int64(96<<20))
	ns, _ := e.streamNumbers(stream)
	assert.Len(t, ns, n)
}

// TestSpoolSurvivesKill: Redis is down; emit spools, and is killed with
// SIGKILL part-way; Redis comes back; the same command drains the spool
// and sends the rest: every event once, in order.
func TestSpoolSurvivesKill(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 150000
	path := filepath.Join(e.dir, "events.jsonl")
	writeNumberedEvents(t, path, n, 150)
	spool := filepath.Join(e.dir, "spool")
	require.NoError(t, e.redis.Stop(ctx))

	cmd := e.emitCmd(nil, "--file", path, "--spool", spool)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	waitFor(t, 60*time.Second, "events in the spool", func() bool {
		st, err := audit.ReadSpoolStatus(spool)
		return err == nil && st.Events >= 5000
	})
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err := cmd.Wait()
	require.Error(t, err, "killed mid-spool, not finished: %s", errb.String())
	st, err := audit.ReadSpoolStatus(spool)
	require.NoError(t, err)
	require.Less(t, st.Events, int64(n))
	t.Logf("spooled before the kill: %d events in %d records (torn tail: %v)", st.Events, st.Records, st.TornTail)

	code, stdout, stderr := e.run(10*time.Second, "spool", "status", spool)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("%d event(s)", st.Events))

	require.NoError(t, e.redis.Restart(ctx))
	code, stdout, stderr = e.emitRun(nil, "--file", path, "--spool", spool)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("emitted %d event(s)", n))
	ns, ids := e.streamNumbers(stream)
	requireOnceInOrder(t, ns, ids, n)
	st, err = audit.ReadSpoolStatus(spool)
	require.NoError(t, err)
	assert.Zero(t, st.Events, "the spool is drained")
	// The second run sent the spool before signing anything, then only
	// what Redis lacked: no gap, break or replay (the killed run's chain
	// has no closing checkpoint: a missing tail in time, which is true).
	_, r := e.verifyJSON("--stream", stream)
	for _, f := range r.Findings {
		assert.Equal(t, "missing_tail", f.Kind, "%+v", f)
	}
}
