package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/wasmtest"
)

// pluginRun runs the command in-process and returns its exit code, stdout
// and stderr (with the error main would print).
func pluginRun(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, stdio{in: strings.NewReader(stdin), out: &out, err: &errOut})
	if err != nil && !errors.Is(err, errSilent) {
		errOut.WriteString("auditproc: " + err.Error() + "\n")
	}
	return exitCode(err), out.String(), errOut.String()
}

func TestPluginCheck(t *testing.T) {
	tag := wasmtest.Path(t, "tag")
	wasm, err := os.ReadFile(tag)
	require.NoError(t, err)
	sum := sha256.Sum256(wasm)

	code, out, stderr := pluginRun(t, "", "plugin", "check", tag)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "abi:      v1\n")
	assert.Contains(t, out, "sha256:   "+hex.EncodeToString(sum[:])+"\n")
	assert.Contains(t, out, "exports:  auditproc_abi_v1, auditproc_alloc, auditproc_init, auditproc_process, memory\n")
	assert.Contains(t, out, "imports:  auditproc.set_message, auditproc.emit, auditproc.event_get, auditproc.event_set\n")
	assert.Contains(t, out, "guard:    metered\n")
	assert.Contains(t, out, "result:   loadable\n")
	assert.Contains(t, out, "size:     "+pluginItoa(len(wasm))+" bytes\n")

	code, out, _ = pluginRun(t, "", "plugin", "check", "--trusted", tag)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "guard:    off\n")

	code, out, _ = pluginRun(t, "", "plugin", "check", wasmtest.Path(t, "panic-go"))
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "wasi_snapshot_preview1.fd_write", "WASI imports are listed")
	assert.Contains(t, out, "_initialize")
}

func TestPluginCheckRefuses(t *testing.T) {
	testdata := filepath.Join("testdata", "plugin")
	big := filepath.Join(t.TempDir(), "big.yaml")
	require.NoError(t, os.WriteFile(big, []byte("blob: "+strings.Repeat("x", 5000)+"\n"), 0o600))
	notWasm := filepath.Join(t.TempDir(), "not-wasm.wasm")
	require.NoError(t, os.WriteFile(notWasm, []byte("this is text, not a module\n"), 0o600))
	tests := []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"no argument", nil, []string{"needs exactly one FILE.wasm argument, got 0"}},
		{"two arguments", []string{"a.wasm", "b.wasm"}, []string{"got 2"}},
		{"missing file", []string{"testdata/plugin/nope.wasm"}, []string{"nope.wasm", "no such file"}},
		{"not wasm", []string{notWasm}, []string{"not-wasm.wasm: host: module refused: not a valid WebAssembly module"}},
		{"missing export", []string{wasmtest.Path(t, "missing-process")}, []string{"is not loadable", "auditproc_process (i32, i32) -> (i32)"}},
		{"other ABI version", []string{wasmtest.Path(t, "abi-v2")}, []string{"built for ABI v2; this host speaks v1"}},
		{"socket import", []string{wasmtest.Path(t, "import-sock")}, []string{"wasi_snapshot_preview1.sock_accept", "wasi_snapshot_preview1.sock_recv"}},
		{"unknown import", []string{wasmtest.Path(t, "import-unknown")}, []string{"env.system"}},
		{"locals bomb", []string{wasmtest.Path(t, "hostile/locals-bomb")}, []string{"locals-bomb.wasm: host: module refused", "too many parameters and locals of function 2: 4294967297, the limit is 49999"}},
		{"init traps", []string{wasmtest.Path(t, "trap-init")}, []string{"auditproc_init", "unreachable"}},
		{"init refuses the configuration", []string{"--config", big, wasmtest.Path(t, "tag")}, []string{"tag: configuration larger than 4 KiB"}},
		{"configuration not a mapping", []string{"--config", filepath.Join(testdata, "list.yaml"), wasmtest.Path(t, "tag")}, []string{"list.yaml must be a mapping", "not a list"}},
		{"bad flag", []string{"--memory-limit", "lots", wasmtest.Path(t, "tag")}, []string{`"lots" is not a size`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := pluginRun(t, "", append([]string{"plugin", "check"}, tt.args...)...)
			assert.Equal(t, exitUsage, code)
			for _, w := range tt.want {
				assert.Contains(t, stderr, w)
			}
		})
	}
}

// pluginLines decodes plugin test's output, dropping duration_us (which
// varies) after checking it is there.
func pluginLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "output line %q", l)
		if _, isErr := m["error"]; !isErr || m["verdict"] != nil {
			require.Contains(t, m, "duration_us", "line %q", l)
			delete(m, "duration_us")
		}
		lines = append(lines, m)
	}
	return lines
}

func decodeJSON(t *testing.T, s string) any {
	var v any
	require.NoError(t, json.Unmarshal([]byte(s), &v))
	return v
}

func TestPluginTest(t *testing.T) {
	tag := wasmtest.Path(t, "tag")
	events := filepath.Join("testdata", "plugin", "events.jsonl")
	const cfg = `{"levels":[1,2],"nested":{"on":true},"team":"security"}`
	want := []string{
		`{"line":1,"event_id":"e1","verdict":"ok","plugin":"tag","message":"tagged","event":{"event_id":"e1","user":"alice","action":"login","tag":` + cfg + `},"emits":[{"sink":"audit","event":{"tagged":true}}]}`,
		`{"line":3,"error":"line 3 is not a JSON object: it is an array"}`,
		`{"line":4,"event_id":"e2","verdict":"reject","plugin":"tag","message":"verdict from event","event":{"event_id":"e2","user":"bob","verdict":3,"tag":` + cfg + `}}`,
		`{"line":5,"error":"line 5 is not a JSON object: invalid JSON at byte 2: invalid character 'o' in literal null (expecting 'u')"}`,
		`{"line":6,"event_id":"e3","verdict":"drop","plugin":"tag","message":"verdict from event","event":{"event_id":"e3","user":"carol","verdict":1,"tag":` + cfg + `}}`,
		`{"line":8,"event_id":"e4","verdict":"ok","plugin":"tag","message":"tagged","event":{"event_id":"e4","user":"dave","text":"Grüße 🌍","tag":` + cfg + `},"emits":[{"sink":"audit","event":{"tagged":true}}]}`,
	}
	for _, config := range []string{"tag.yaml", "tag.json"} {
		t.Run("config "+config, func(t *testing.T) {
			code, out, stderr := pluginRun(t, "", "plugin", "test", tag, "--sink", "audit",
				"--config", filepath.Join("testdata", "plugin", config), "--events", events)
			require.Equal(t, exitOK, code, stderr)
			got := pluginLines(t, out)
			require.Len(t, got, len(want), out)
			for i := range want {
				assert.Equal(t, decodeJSON(t, want[i]), any(got[i]), "line %d", i)
			}
		})
	}

	t.Run("stdin, no sink granted, flags before the file", func(t *testing.T) {
		code, out, stderr := pluginRun(t, `{"event_id":"s1"}`+"\n"+`{"event_id":"s2"}`, "plugin", "test", "--name", "tagger", tag)
		require.Equal(t, exitOK, code, stderr)
		got := pluginLines(t, out)
		require.Len(t, got, 2)
		for i, id := range []string{"s1", "s2"} {
			assert.Equal(t, decodeJSON(t, `{"line":`+pluginItoa(i+1)+`,"event_id":"`+id+`","verdict":"ok","plugin":"tagger","message":"tagged","event":{"event_id":"`+id+`","tag":{}}}`), any(got[i]))
		}
	})

	t.Run("host-imposed verdicts carry an error and the run goes on", func(t *testing.T) {
		in := `{"event_id":"x1"}` + "\n" + `{"event_id":"x2","boom":true}` + "\n" + `{"event_id":"x3"}` + "\n"
		code, out, stderr := pluginRun(t, in, "plugin", "test", "--deadline", "50ms", wasmtest.Path(t, "loop"))
		require.Equal(t, exitOK, code, stderr)
		got := pluginLines(t, out)
		require.Len(t, got, 3)
		assert.Equal(t, "ok", got[0]["verdict"])
		assert.Equal(t, "retry", got[1]["verdict"])
		assert.Contains(t, got[1]["error"], "exceeded its deadline of 50ms")
		assert.Equal(t, "ok", got[2]["verdict"], "a fresh instance takes the next event")
	})

	t.Run("memory limit", func(t *testing.T) {
		code, out, stderr := pluginRun(t, `{"boom":1}`, "plugin", "test", "--memory-limit", "4MiB", wasmtest.Path(t, "membomb"))
		require.Equal(t, exitOK, code, stderr)
		got := pluginLines(t, out)
		require.Len(t, got, 1)
		assert.Equal(t, "retry", got[0]["verdict"])
		assert.Contains(t, got[0]["error"], "unreachable", "memory.grow failed at the cap and the guest trapped")
	})
}

func TestPluginTestUsageErrors(t *testing.T) {
	testdata := filepath.Join("testdata", "plugin")
	tag := wasmtest.Path(t, "tag")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no file", nil, "needs exactly one FILE.wasm argument, got 0"},
		{"not loadable", []string{wasmtest.Path(t, "missing-alloc")}, "auditproc_alloc"},
		{"locals bomb", []string{wasmtest.Path(t, "hostile/locals-bomb")}, "host: module refused: code section at byte 105: too many parameters and locals"},
		{"missing events file", []string{tag, "--events", filepath.Join(testdata, "nope.jsonl")}, "nope.jsonl: no such file"},
		{"missing config file", []string{tag, "--config", filepath.Join(testdata, "nope.yaml")}, "nope.yaml: no such file"},
		{"broken config", []string{tag, "--config", filepath.Join(testdata, "broken.yaml")}, "broken.yaml is neither YAML nor JSON"},
		{"config not a mapping", []string{tag, "--config", filepath.Join(testdata, "list.yaml")}, "must be a mapping"},
		{"bad deadline", []string{tag, "--deadline", "-1s"}, "must be above zero"},
		{"unknown flag", []string{tag, "--frobnicate"}, "flag provided but not defined: -frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := pluginRun(t, "{}\n", append([]string{"plugin", "test"}, tt.args...)...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, stderr, tt.want)
		})
	}
}

func TestPluginHelp(t *testing.T) {
	code, out, _ := pluginRun(t, "", "plugin", "test", "--help")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "A line that is not a JSON object gets")
	assert.Contains(t, out, "-events FILE")
	code, out, _ = pluginRun(t, "", "plugin")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, out, "check")
	assert.Contains(t, out, "test")
}

var pluginBinary struct {
	once sync.Once
	path string
	err  error
}

// buildPluginBinary builds the auditproc binary once per test run.
func buildPluginBinary(t *testing.T) string {
	t.Helper()
	pluginBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "auditproc-plugin-test")
		if err != nil {
			pluginBinary.err = err
			return
		}
		pluginBinary.path = filepath.Join(dir, "auditproc")
		out, err := exec.Command("go", "build", "-o", pluginBinary.path, ".").CombinedOutput()
		if err != nil {
			pluginBinary.err = errors.New(string(out))
		}
	})
	require.NoError(t, pluginBinary.err, "build auditproc")
	return pluginBinary.path
}

// TestPluginBinaryExitCodes runs the built binary as a real process.
func TestPluginBinaryExitCodes(t *testing.T) {
	bin := buildPluginBinary(t)
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string
		stderr string
	}{
		{"check loadable", []string{"plugin", "check", wasmtest.Path(t, "tag")}, "", 0, "result:   loadable", ""},
		{"check refused", []string{"plugin", "check", wasmtest.Path(t, "import-sock")}, "", 2, "result:   refused", "plugins get no network"},
		{"check without file", []string{"plugin", "check"}, "", 2, "", "needs exactly one FILE.wasm"},
		{"test from stdin", []string{"plugin", "test", wasmtest.Path(t, "tag")}, "{\"event_id\":\"b1\"}\nnope\n", 0, `"event_id":"b1","verdict":"ok"`, ""},
		{"test with a trap", []string{"plugin", "test", wasmtest.Path(t, "trap-process")}, `{"boom":1}`, 0, `"verdict":"retry"`, ""},
		{"test of an unloadable module", []string{"plugin", "test", wasmtest.Path(t, "abi-v2")}, "{}", 2, "", "built for ABI v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.code, code, "stderr: %s", errOut.String())
			assert.Contains(t, out.String(), tt.stdout)
			assert.Contains(t, errOut.String(), tt.stderr)
		})
	}
}

func pluginItoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestPluginToolsUseRunsDefaults: plugin check and plugin test give a
// plugin run's deadline (100 ms) and memory cap (32 MiB), and plugin test
// keeps the plugin's log lines, on standard error.
func TestPluginToolsUseRunsDefaults(t *testing.T) {
	// bigmem declares 64 MiB of initial memory: above run's 32 MiB cap.
	code, _, stderr := pluginRun(t, "", "plugin", "check", wasmtest.Path(t, "bigmem"))
	assert.Equal(t, exitUsage, code, "refused under run's 32 MiB cap")
	assert.Contains(t, stderr, "bigmem")
	code, _, stderr = pluginRun(t, "", "plugin", "check", "--memory-limit", "80MiB", wasmtest.Path(t, "bigmem"))
	assert.Equal(t, exitOK, code, stderr)

	code, out, stderr := pluginRun(t, `{"event_id":"e1","action":"boom"}`+"\n", "plugin", "test", wasmtest.Path(t, "loop"))
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "exceeded its deadline of 100ms")

	code, out, stderr = pluginRun(t, `{"event_id":"e1"}`+"\n", "plugin", "test", wasmtest.Path(t, "log-flood"))
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, `"verdict":"ok"`)
	assert.Contains(t, stderr, "plugin_logged", "the plugin's log lines are kept")
	assert.Contains(t, stderr, "plugin=log-flood")
}
