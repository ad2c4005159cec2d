package integrity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const pythonRecipe = "../../examples/producers/python/audit_sign.py"

// python3 returns the interpreter's path, or skips the test when there is
// none, unless AUDITPROC_NO_SKIP=1 makes that a failure.
func python3(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("AUDITPROC_NO_SKIP") == "1" {
			t.Fatalf("python3 is not on PATH and AUDITPROC_NO_SKIP=1: %v", err)
		}
		t.Skipf("python3 is not on PATH (%v): the Python producer recipe is not checked", err)
	}
	return path
}

// runRecipe runs the Python recipe with extra environment (keys travel
// there, never in argv) and returns stdout; stderr goes into the failure.
func runRecipe(t *testing.T, env []string, stdin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(python3(t), append([]string{"-I", pythonRecipe}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUDITPROC_HMAC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
	return stdout.Bytes()
}

func TestPythonRecipeSignsWhatGoVerifies(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	keyring := "active py-2\n" + FormatKeyLine("py-1", k1) + "\n" + FormatKeyLine("py-2", k2)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(keyFile, []byte(keyring), 0o600))
	k, err := ParseKeyring([]byte(keyring))
	require.NoError(t, err)

	for _, tc := range []struct {
		name, event string
		env         []string
		wantKid     string
		wantID      string
	}{
		{"inline keys, stamped by the recipe", `{"action":"login","user":"ålice ☕"}`,
			[]string{EnvKeys + "=" + strings.ReplaceAll(keyring, "\n", ";")}, "py-2", ""},
		{"key file, producer's own id", "{ \"event_id\": \"order-77\", \"amount\": 3 }\n",
			[]string{EnvKeysFile + "=" + keyFile}, "py-2", "order-77"},
		{"active key override", `{}`,
			[]string{EnvKeysFile + "=" + keyFile, EnvActiveKey + "=py-1"}, "py-1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runRecipe(t, tc.env, tc.event, "audit:python")
			assertNoKeyMaterial(t, string(out), k1, k2)
			var fields map[string]any
			require.NoError(t, json.Unmarshal(out, &fields))

			env, err := k.Verify("audit:python", fields)
			require.NoError(t, err)
			assert.Equal(t, tc.wantKid, env.KeyID)
			if tc.wantID != "" {
				assert.Equal(t, tc.wantID, env.EventID)
			} else {
				assert.Regexp(t, uuidV7, env.EventID)
			}
			// The recipe stamps the same way Stamp does: nothing left to add.
			again, id, err := Stamp(env.Event, time.Now())
			require.NoError(t, err)
			assert.Equal(t, env.Event, again)
			assert.Equal(t, env.EventID, id)

			_, err = k.Verify("audit:other", fields)
			require.ErrorIs(t, err, ErrSignatureMismatch, "bound to its stream")
		})
	}
}

func TestPythonRecipeChecksVectors(t *testing.T) {
	out := runRecipe(t, nil, "", "--check-vectors", vectorsPath)
	vf, _ := loadVectors(t)
	assert.Equal(t, fmt.Sprintf("checked %d vectors, 0 problems\n", len(vf.Vectors)), string(out))
}
