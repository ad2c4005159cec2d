package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/wasmtest"
)

// TestPipelineTestFiles runs the repository's pipeline test files
// (tests/pipeline/) against the default pipeline with the plugins built by
// the project: every case passes. A changed expectation fails with the
// difference and exit 1; a broken test file exits 2.
func TestPipelineTestFiles(t *testing.T) {
	wasmtest.Dir(t) // the default pipeline's modules are built
	root := wasmtest.Root(t)
	dir := filepath.Join(root, "tests", "pipeline")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "the default pipeline ships with tests")

	junit := filepath.Join(t.TempDir(), "junit.xml")
	out, errOut, code := runCLI(t, "test", dir, "--junit", junit)
	require.Equal(t, exitOK, code, "%s%s", out, errOut)
	assert.NotContains(t, out, "FAIL")
	assert.Contains(t, out, " 0 failed")
	var suites junitSuites
	data, err := os.ReadFile(junit)
	require.NoError(t, err)
	require.NoError(t, xml.Unmarshal(data, &suites))
	require.Len(t, suites.Suites, len(files))
	for _, s := range suites.Suites {
		assert.Positive(t, s.Tests)
		assert.Zero(t, s.Failures)
	}

	// The same file with two expectations changed: exit 1, each difference
	// named, the other cases still pass.
	text, err := os.ReadFile(filepath.Join(dir, "default.yaml"))
	require.NoError(t, err)
	changed := strings.Replace(string(text), "count: 5", "count: 4", 1)
	changed = strings.Replace(changed, `note: "called with Bearer [REDACTED]"`, `note: "called with Bearer abc.def.ghi"`, 1)
	changed = strings.Replace(changed, "pipeline: ../../plugins.yaml", "pipeline: "+filepath.Join(root, "plugins.yaml"), 1)
	require.NotEqual(t, string(text), changed)
	bad := writeFile(t, t.TempDir(), "changed.yaml", changed)
	out, _, code = runCLI(t, "test", bad, "--junit", junit)
	assert.Equal(t, exitFail, code, out)
	assert.Contains(t, out, "emits.alerts[0].count: want 4, got 5")
	assert.Contains(t, out, `event.note: want "called with Bearer abc.def.ghi", got "called with Bearer [REDACTED]"`)
	assert.Contains(t, out, "2 failed")
	data, err = os.ReadFile(junit)
	require.NoError(t, err)
	suites = junitSuites{}
	require.NoError(t, xml.Unmarshal(data, &suites))
	require.Len(t, suites.Suites, 1)
	assert.Equal(t, 2, suites.Suites[0].Failures)

	// Broken test files are usage errors (exit 2), naming what is wrong.
	tmp := t.TempDir()
	for name, tc := range map[string]struct{ text, want string }{
		"unknown key":   {"pipeline: " + filepath.Join(root, "plugins.yaml") + "\ncases:\n  - name: a\n    input: {a: 1}\n    expct: {verdict: ok}\n", "expct"},
		"bad verdict":   {"pipeline: " + filepath.Join(root, "plugins.yaml") + "\ncases:\n  - name: a\n    input: {a: 1}\n    expect: {verdict: accept}\n", `"accept" is not ok, drop, reject or retry`},
		"no pipeline":   {"cases:\n  - name: a\n    input: {a: 1}\n", "pipeline: is required"},
		"no such file":  {"pipeline: nowhere.yaml\ncases:\n  - name: a\n    input: {a: 1}\n", "nowhere.yaml"},
		"missing input": {"pipeline: " + filepath.Join(root, "plugins.yaml") + "\ncases:\n  - name: a\n", "input: is required"},
	} {
		f := writeFile(t, tmp, strings.ReplaceAll(name, " ", "-")+".yaml", tc.text)
		out, errOut, code := runCLI(t, "test", f)
		assert.Equal(t, exitUsage, code, "%s: %s%s", name, out, errOut)
		assert.Contains(t, errOut, tc.want, name)
	}
	_, _, code = runCLI(t, "test")
	assert.Equal(t, exitUsage, code)
}
