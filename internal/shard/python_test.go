package shard

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const pythonRecipe = "../../examples/producers/python/audit_sign.py"

// python runs the recipe's Python with args and returns stdout; a missing
// python3 skips, unless AUDITPROC_NO_SKIP=1 makes that a failure.
func python(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("AUDITPROC_NO_SKIP") == "1" {
			t.Fatalf("python3 is not on PATH and AUDITPROC_NO_SKIP=1: %v", err)
		}
		t.Skipf("python3 is not on PATH (%v): the Python producer recipe is not checked", err)
	}
	cmd := exec.Command(path, append([]string{"-I"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "stderr: %s", stderr.String())
	return string(out)
}

// The Python producer recipe puts every event on the shard auditproc emit
// and the audit package would, and names the shards' streams alike.
func TestPythonRecipeAgreesOnShards(t *testing.T) {
	events := []string{
		`{"actor":"alice"}`, `{"actor":"bob","x":1}`, `{"x":{"actor":"no"},"actor":"carol"}`,
		`{"actor":"ålice ☕"}`, `{"actor":"al\u0069ce"}`, `{"actor":42}`, `{"actor":-1.50e3}`,
		`{"actor":true}`, `{"actor":""}`, `{"n":1}`, `{"actor":null}`, `{"actor":"a","actor":"b"}`,
	}
	for i := range 200 {
		events = append(events, fmt.Sprintf(`{"action":"read","actor":"user-%d"}`, i))
	}
	for _, n := range []int{2, 3, 7, 16} {
		out := python(t, strings.Join(events, "\n")+"\n", pythonRecipe, "--shard-of", fmt.Sprint(n), "actor")
		got := strings.Fields(out)
		require.Len(t, got, len(events))
		for i, ev := range events {
			want := "-"
			if _, ok := field([]byte(ev), "actor"); ok {
				want = fmt.Sprint(Of([]byte(ev), "actor", n, nil))
			}
			assert.Equal(t, want, got[i], "shard of %s among %d", ev, n)
		}
	}
	names := []string{"audit:stream", "{audit}:stream", "x{a}y{b}", "{}:s", "{open"}
	script := "import sys; sys.path.insert(0, sys.argv[1]); import audit_sign\n" +
		"for name in sys.argv[2:]:\n    print(' '.join(audit_sign.shard_stream(name, k) for k in range(3)))"
	out := python(t, "", append([]string{"-c", script, filepath.Dir(pythonRecipe)}, names...)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, len(names))
	for i, name := range names {
		assert.Equal(t, Key(name, 0)+" "+Key(name, 1)+" "+Key(name, 2), lines[i], "shards of %q", name)
	}
}
