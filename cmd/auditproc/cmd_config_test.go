package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// testKeyring sets a freshly generated HMAC keyring in the environment.
func testKeyring(t *testing.T) {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	t.Setenv("AUDITPROC_HMAC_KEYS", "key test-1 base64:"+base64.StdEncoding.EncodeToString(key))
	t.Setenv("AUDITPROC_HMAC_KEYS_FILE", "")
	t.Setenv("AUDITPROC_CONFIG", "")
}

// runCLI runs the command line in-process and returns stdout, stderr and the
// exit code main would use.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, args, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
	if err != nil && !errors.Is(err, errSilent) {
		fmt.Fprintln(&errOut, "auditproc:", err)
	}
	return out.String(), errOut.String(), exitCode(err)
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

// TestConfigCheckAgreesWithRun gives config check and run the same file,
// environment and flags: check passes exactly when run starts (run here
// processes the empty stream and stops), and refuses exactly what run
// refuses, both with exit 2.
func TestConfigCheckAgreesWithRun(t *testing.T) {
	srv := redistest.Start(t)
	tag := wasmtest.Path(t, "tag")
	refuse := wasmtest.Path(t, "refuse-init")
	base := func(stream string) string {
		return fmt.Sprintf(`redis:
  url: %s
stream:
  name: agree:%s
dead_letter:
  stream: agree:%s:dead
log:
  format: json
`, srv.URL(), stream, stream)
	}
	plugin := fmt.Sprintf("plugins:\n  - name: tag\n    path: %s\n", tag)
	cases := []struct {
		name   string
		file   string // the file after base, or the whole file when it starts with "!"
		env    map[string]string
		flags  []string
		noKeys bool
		want   int
		says   string // in config check's report, when set
	}{
		{name: "valid", file: plugin, want: exitOK},
		{name: "metrics off in the file", file: plugin + "metrics:\n  address: \"off\"\n", want: exitOK},
		{name: "metrics off by flag", file: plugin, flags: []string{"--metrics-addr", "off"}, want: exitOK},
		{name: "durations from the environment", file: plugin, env: map[string]string{"AUDITPROC_CONSUMER_BLOCK": "500ms"}, want: exitOK},
		{name: "no HMAC keys", file: plugin, noKeys: true, want: exitUsage},
		{name: "consumer.block without unit", file: plugin + "consumer:\n  block: 5\n", want: exitUsage},
		{name: "reclaim.interval without unit", file: plugin + "reclaim:\n  interval: 5\n", want: exitUsage},
		{name: "plugin deadline without unit", file: fmt.Sprintf("plugins:\n  - name: tag\n    path: %s\n    deadline: 100\n", tag), want: exitUsage},
		{name: "duration without unit from the environment", file: plugin, env: map[string]string{"AUDITPROC_RECLAIM_INTERVAL": "5"}, want: exitUsage},
		{name: "misspelt AUDITPROC_ variable", file: plugin, env: map[string]string{"AUDITPROC_CONSUMR_WORKERS": "4"}, want: exitUsage},
		{name: "unknown key", file: plugin + "consumer:\n  wrokers: 4\n", want: exitUsage},
		{name: "YAML syntax error", file: plugin + "consumer:\n workers: 4\n  batch_size: 2\n", want: exitUsage},
		{name: "bad metrics address", file: plugin + "metrics:\n  address: \"9464\"\n", want: exitUsage},
		{name: "workers out of range by flag", file: plugin, flags: []string{"--workers", "0"}, want: exitUsage},
		{name: "missing plugin module", file: "plugins:\n  - name: ghost\n    path: " + filepath.Join(t.TempDir(), "ghost.wasm") + "\n", want: exitUsage},
		{name: "plugin refuses its config", file: fmt.Sprintf("plugins:\n  - name: refuse\n    path: %s\n", refuse), want: exitUsage},
		{name: "no plugins", file: "", want: exitUsage},
		// A cluster (closed loopback port: nothing is asked) whose stream
		// and dead-letter stream hash to different slots: every commit
		// would fail with CROSSSLOT.
		{name: "cluster layout that fails every commit", file: plugin, env: map[string]string{"AUDITPROC_REDIS_URL": "", "AUDITPROC_REDIS_CLUSTER_ADDRS": "127.0.0.1:1"}, want: exitUsage, says: "slot"},
		{name: "password in the file", file: plugin + "redis:\n  password: hunter2\n", want: exitUsage},
		{name: "missing TLS CA file", file: plugin, env: map[string]string{"AUDITPROC_REDIS_TLS_CA_FILE": filepath.Join(t.TempDir(), "ca.pem")}, want: exitUsage},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testKeyring(t)
			if tc.noKeys {
				t.Setenv("AUDITPROC_HMAC_KEYS", "")
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			text := base(fmt.Sprint(i)) + tc.file
			if !strings.Contains(tc.file, "metrics:") {
				text += "metrics:\n  address: \"127.0.0.1:0\"\n"
			}
			// A section named twice in YAML is an error of its own; merge
			// the case's section into the base's by writing it last only
			// where base lacks it.
			text = mergeSections(text)
			file := writeFile(t, t.TempDir(), "plugins.yaml", text)

			checkOut, checkErr, checkCode := runCLI(t, append([]string{"config", "check", file}, tc.flags...)...)
			_, runErr, runCode := runCLI(t, append([]string{"run", "--config", file, "--stop-when-idle"}, tc.flags...)...)
			assert.Equal(t, tc.want, checkCode, "config check:\n%s%s", checkOut, checkErr)
			assert.Equal(t, checkCode, runCode, "run must agree with config check:\nrun said:\n%s\ncheck said:\n%s%s", runErr, checkOut, checkErr)
			if tc.want != exitOK {
				assert.NotContains(t, runErr, "processor_started", "run refused before it started")
			}
			if tc.says != "" {
				assert.Contains(t, checkErr, tc.says)
			}
		})
	}
}

// mergeSections joins top-level YAML sections written twice (a case adds
// keys to a section the base already has), keeping the later keys last.
func mergeSections(text string) string {
	var order []string
	body := map[string][]string{}
	var cur string
	for _, line := range strings.Split(text, "\n") {
		if line != "" && line[0] != ' ' && strings.HasSuffix(line, ":") {
			cur = line
			if _, ok := body[cur]; !ok {
				order = append(order, cur)
				body[cur] = nil
			}
			continue
		}
		if line == "" {
			continue
		}
		body[cur] = append(body[cur], line)
	}
	var b strings.Builder
	for _, sec := range order {
		b.WriteString(sec + "\n")
		for _, l := range body[sec] {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestConfigCheckReportsAllErrors puts many problems in one file, the
// environment and the flags: one run of config check reports every one,
// each with where its value came from, the bad value where there is one, and
// exits 2.
func TestConfigCheckReportsAllErrors(t *testing.T) {
	testKeyring(t)
	dir := t.TempDir()
	refuse := wasmtest.Path(t, "refuse-init")
	tag := wasmtest.Path(t, "tag")
	file := writeFile(t, dir, "plugins.yaml", `stream:
  name: all:errors
consumer:
  block: 5
  workers: many
  batch_size: 100
reclaim:
  interval: 5
  max_deliveries: 0
metrics:
  address: "9464"
plugins:
  - name: tag
    path: `+tag+`
    deadline: 50
  - name: ghost
    path: ghost.wasm
  - name: refuse
    path: `+refuse+`
  - name: tag
    path: `+tag+`
    colour: blue
`)
	t.Setenv("AUDITPROC_CONSUMR_WORKERS", "4")
	t.Setenv("AUDITPROC_RECLAIM_MIN_IDLE", "30")
	t.Setenv("AUDITPROC_HMAC_KEYS", "")

	out, errOut, code := runCLI(t, "config", "check", file, "--batch-size", "0")
	assert.Equal(t, exitUsage, code)
	assert.Empty(t, out)
	want := []string{
		file + ":4: consumer.block: 5 has no unit",
		file + `:5: consumer.workers: "many" is not a whole number`,
		file + ":8: reclaim.interval: 5 has no unit",
		file + ":9: reclaim.max_deliveries: must be at least 1, got 0",
		file + `:11: metrics.address: "9464" is not host:port`,
		file + ":15: plugins[0].deadline: 50 has no unit",
		file + ":22: plugins[3].colour: unknown key",
		file + `:20: plugins[3].name: "tag" is already the name of plugins[0]`,
		file + ":16: plugins[1] (ghost):",
		file + ":18: plugins[2] (refuse): ",
		"AUDITPROC_CONSUMR_WORKERS: unknown variable",
		"did you mean AUDITPROC_CONSUMER_WORKERS?",
		"AUDITPROC_RECLAIM_MIN_IDLE: reclaim.min_idle: 30 has no unit",
		"--batch-size: consumer.batch_size: must be between 1 and 10000, got 0",
		"no keys: set AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE",
	}
	for _, w := range want {
		assert.Contains(t, errOut, w)
	}
	assert.Contains(t, errOut, fmt.Sprintf("%d problems", len(want)-1), errOut)
	// A file value overridden by the environment or a flag is not blamed
	// on the file.
	assert.NotContains(t, errOut, file+":6:")
}

// TestConfigCheckPrint shows the effective configuration with the origin of
// every value.
func TestConfigCheckPrint(t *testing.T) {
	testKeyring(t)
	tag := wasmtest.Path(t, "tag")
	file := writeFile(t, t.TempDir(), "plugins.yaml", `consumer:
  workers: 3
  block: 1s
metrics:
  address: "off"
plugins:
  - name: tag
    path: `+tag+`
`)
	t.Setenv("AUDITPROC_CONSUMER_BLOCK", "250ms")
	out, errOut, code := runCLI(t, "config", "check", "--print", file, "--batch-size", "64")
	require.Equal(t, exitOK, code, errOut)
	lines := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			lines[f[0]] = f[1:]
		}
	}
	assert.Equal(t, []string{"3", file + ":2"}, lines["consumer.workers"])
	assert.Equal(t, []string{"250ms", "AUDITPROC_CONSUMER_BLOCK"}, lines["consumer.block"])
	assert.Equal(t, []string{"64", "--batch-size"}, lines["consumer.batch_size"])
	assert.Equal(t, []string{"off", file + ":5"}, lines["metrics.address"])
	assert.Equal(t, []string{"5s", "default"}, lines["reclaim.interval"])
	assert.Equal(t, []string{"100ms", "default"}, lines["plugins[0].deadline"])
	assert.NotContains(t, out, os.Getenv("AUDITPROC_HMAC_KEYS")[len("key test-1 base64:"):], "no secret is printed")
}

// TestRunStoppedWhileStartingIsNoConfigError: a run stopped (SIGTERM) while
// its plugins load exits 0, saying nothing of an invalid configuration:
// an orchestrator that stops a starting replica sees a clean stop.
func TestRunStoppedWhileStartingIsNoConfigError(t *testing.T) {
	srv := redistest.Start(t)
	testKeyring(t)
	dir := t.TempDir()
	file := writeFile(t, dir, "plugins.yaml", fmt.Sprintf("redis: {url: %q}\nmetrics: {address: \"\"}\nplugins:\n  - {name: tag, path: %q}\n",
		srv.URL(), wasmtest.Path(t, "tag")))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"run", "--config", file}, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
	require.NoError(t, err, "stderr: %s", errOut.String())
	assert.NotContains(t, errOut.String(), "invalid configuration")
}
