// Package e2e runs the real auditproc binary against a real Redis server:
// each test writes a plugins.yaml, appends signed (and forged) entries,
// starts one or more `auditproc run` processes, and checks what reached the
// sinks, the dead-letter stream and the pending list.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/bench"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

var binary string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

// buildAndRun builds the auditproc binary once for the package, unless
// AUDITPROC_TEST_BIN names one to test instead.
func buildAndRun(m *testing.M) int {
	if bin := os.Getenv("AUDITPROC_TEST_BIN"); bin != "" {
		binary = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "auditproc-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "auditproc")
	cmd := exec.Command("go", "build", "-o", binary, "github.com/auditproc/auditproc/cmd/auditproc")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build auditproc:", err)
		return 1
	}
	return m.Run()
}

// env is one test's world: a Redis server, a keyring file, a work directory.
type env struct {
	t        *testing.T
	redis    *redistest.Server
	rdb      *redis.Client
	dir      string
	keysFile string
	keys     *integrity.Keyring
	bus      *streambus.Bus
	wasm     string // directory of the built modules
	cache    string // compilation cache shared by the test's processes
}

func newEnv(t *testing.T, opts ...redistest.Option) *env {
	t.Helper()
	e := newEnvWith(t, opts...)
	e.rdb = e.redis.Client(t)
	var err error
	e.bus, err = streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), e.rdb, e.keys)
	require.NoError(t, err)
	return e
}

// newEnvWith is newEnv without a client of its own to the server (which may
// want a password).
func newEnvWith(t *testing.T, opts ...redistest.Option) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), wasm: wasmtest.Dir(t)}
	e.redis = redistest.Start(t, opts...)
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	e.keysFile = filepath.Join(e.dir, "keys")
	require.NoError(t, os.WriteFile(e.keysFile, []byte(integrity.FormatKeyLine("e2e", key)+"\n"), 0o600))
	e.keys, err = integrity.NewKeyring("e2e", map[string][]byte{"e2e": key})
	require.NoError(t, err)
	e.cache = filepath.Join(os.TempDir(), "auditproc-e2e-cache")
	return e
}

// config writes a plugins.yaml made of the common head (Redis, fast reclaim
// settings) and body, and returns its path.
func (e *env) config(body string) string {
	e.t.Helper()
	return e.configWith("consumer: {block: 200ms, batch_size: 64, shutdown_timeout: 10s}\n"+
		"reclaim: {interval: 200ms, min_idle: 1s, max_deliveries: 3}\n", body)
}

// configWith is config with consumer and reclaim settings of the test's
// own (YAML lines); the crash journal goes to the test's directory either
// way.
func (e *env) configWith(settings, body string) string {
	e.t.Helper()
	head := fmt.Sprintf(`redis: {url: %q}
host: {cache_dir: %q}
log: {format: json, level: info}
metrics: {address: ""}
`, e.redis.URL(), e.cache) + settings
	head = strings.Replace(head, "consumer: {", fmt.Sprintf("consumer: {state_dir: %q, ", e.stateDir()), 1)
	path := filepath.Join(e.dir, fmt.Sprintf("plugins-%d.yaml", time.Now().UnixNano()))
	body = strings.ReplaceAll(body, "$WASM", e.wasm)
	require.NoError(e.t, os.WriteFile(path, []byte(head+body), 0o600))
	return path
}

// stateDir is the crash-journal directory of the test's processes.
func (e *env) stateDir() string { return filepath.Join(e.dir, "state") }

// emit appends signed events and returns their entry ids.
func (e *env) emit(stream string, events ...string) []string {
	e.t.Helper()
	ids := make([]string, len(events))
	for i, ev := range events {
		entry, err := e.bus.XAdd(context.Background(), stream, []byte(ev), 0)
		require.NoError(e.t, err)
		ids[i] = entry.ID
	}
	return ids
}

// emitNumbered appends n events {"seq":i,...} and returns their event ids by seq.
func (e *env) emitNumbered(stream string, n int, extra string) []string {
	e.t.Helper()
	ids := make([]string, n)
	pipe := e.rdb.Pipeline()
	for i := 0; i < n; i++ {
		ev := fmt.Sprintf(`{"seq":%d,"actor":"user-%d","action":"read","severity":"info"%s}`, i, i%17, extra)
		stamped, id, err := integrity.Stamp([]byte(ev), time.Now())
		require.NoError(e.t, err)
		env, err := e.keys.Sign(stream, stamped)
		require.NoError(e.t, err)
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: env.Values()})
		ids[i] = id
		if i%500 == 499 {
			_, err := pipe.Exec(context.Background())
			require.NoError(e.t, err)
		}
	}
	_, err := pipe.Exec(context.Background())
	require.NoError(e.t, err)
	return ids
}

// proc is a running auditproc process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	stdout *syncBuffer
	done   chan struct{}
	err    error
}

// start runs `auditproc args...` with the test's keyring in the environment.
func (e *env) start(args ...string) *proc {
	e.t.Helper()
	return e.startEnv(nil, args...)
}

// startEnv is start with extra environment variables ("KEY=value").
func (e *env) startEnv(extra []string, args ...string) *proc {
	e.t.Helper()
	p := &proc{t: e.t, stderr: &syncBuffer{}, stdout: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(append(os.Environ(), "AUDITPROC_HMAC_KEYS_FILE="+e.keysFile), extra...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(e.t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() {
			e.t.Logf("auditproc %s stderr:\n%s", strings.Join(args, " "), tail(p.stderr.String(), 60))
		}
	})
	return p
}

// run runs auditproc to completion and returns its exit code and output.
func (e *env) run(timeout time.Duration, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	p := e.start(args...)
	return p.wait(timeout), p.stdout.String(), p.stderr.String()
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("auditproc did not exit within %s; stderr:\n%s", timeout, tail(p.stderr.String(), 40))
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) signal(sig syscall.Signal) { require.NoError(p.t, p.cmd.Process.Signal(sig)) }

// logLines returns the process's JSON log lines whose msg is name.
func (p *proc) logLines(name string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == name {
			out = append(out, m)
		}
	}
	return out
}

// sinkRecords reads every entry of a sink stream, verified, as decoded JSON.
func (e *env) sinkRecords(stream string) []map[string]any {
	e.t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(e.t, err)
	out := make([]map[string]any, 0, len(msgs))
	for _, m := range msgs {
		if m.Values[integrity.FieldKind] == integrity.KindCheckpoint {
			continue // the writing replica's chain
		}
		env, err := e.keys.Verify(stream, m.Values)
		require.NoError(e.t, err, "sink entry %s must be signed", m.ID)
		var rec map[string]any
		require.NoError(e.t, json.Unmarshal(env.Event, &rec))
		out = append(out, rec)
	}
	return out
}

// countByEventID counts sink records per event_id.
func countByEventID(recs []map[string]any) map[string]int {
	c := map[string]int{}
	for _, r := range recs {
		id, _ := r["event_id"].(string)
		c[id]++
	}
	return c
}

func (e *env) pending(stream, group string) int64 {
	e.t.Helper()
	p, err := e.rdb.XPending(context.Background(), stream, group).Result()
	require.NoError(e.t, err)
	return p.Count
}

// records counts the entries of a sink or dead-letter stream that are
// records (emits, dead letters): not the checkpoints of the replicas'
// chains, nor withdrawals of dead letters.
func (e *env) records(stream string) int64 {
	e.t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(e.t, err)
	n := int64(0)
	for _, m := range msgs {
		_, withdrawal := m.Values[streambus.WithdrawnID]
		if m.Values[integrity.FieldKind] != integrity.KindCheckpoint && !withdrawal {
			n++
		}
	}
	return n
}

// deadLetters returns the dead letters of stream.
func (e *env) deadLetters(stream string) []redis.XMessage {
	e.t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(e.t, err)
	var out []redis.XMessage
	for _, m := range msgs {
		if _, ok := m.Values[streambus.DeadLetterOriginalID]; ok {
			out = append(out, m)
		}
	}
	return out
}

func (e *env) xlen(stream string) int64 {
	e.t.Helper()
	n, err := e.rdb.XLen(context.Background(), stream).Result()
	require.NoError(e.t, err)
	return n
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// peakRSSWhile polls the peak resident set of the started process pid
// (bench.PeakRSS, not the child's ru_maxrss, which carries this test
// binary's resident set from before the exec) until done is closed, and
// returns the highest it read, bytes.
func peakRSSWhile(pid int, done <-chan struct{}) int64 {
	var peak int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		peak = max(peak, bench.PeakRSS(pid))
		select {
		case <-done:
			return peak
		case <-tick.C:
		}
	}
}
