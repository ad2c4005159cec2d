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

// TestPythonRecipeSignsAChain: the recipe's --chain mode signs version 2
// entries that Go verifies, one source, seq 1, 2, 3 linked by prev, and a
// closing checkpoint; it refuses an event naming a member twice.
func TestPythonRecipeSignsAChain(t *testing.T) {
	key := testKey(t)
	k, err := NewKeyring("py", map[string][]byte{"py": key})
	require.NoError(t, err)
	env := []string{EnvKeys + "=" + FormatKeyLine("py", key)}
	out := runRecipe(t, env, "{\"action\":\"a\"}\n{\"action\":\"b\"}\n{\"event_id\":\"own\",\"action\":\"c\"}\n", "--chain", "billing-api", "audit:py")
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 4, "three events and the closing checkpoint")
	var prev, source string
	for i, line := range lines {
		var values map[string]string
		require.NoError(t, json.Unmarshal([]byte(line), &values))
		fields := make([]string, 0, 16)
		for _, name := range []string{FieldVersion, FieldKeyID, FieldSource, FieldSeq, FieldPrev, FieldKind, FieldEvent, FieldSig} {
			fields = append(fields, name, values[name])
		}
		got, err := k.VerifyFields("audit:py", fields)
		require.NoError(t, err, "entry %d", i+1)
		assert.Equal(t, uint64(i+1), got.Seq)
		assert.Equal(t, prev, got.Prev, "entry %d signs its predecessor", i+1)
		if i == 0 {
			source = got.Source
			assert.True(t, strings.HasPrefix(source, "billing-api/"), source)
		}
		assert.Equal(t, source, got.Source)
		prev = got.Sig
		if i == 3 {
			require.True(t, got.IsCheckpoint())
			cp, err := ParseCheckpoint(got.Event)
			require.NoError(t, err)
			assert.True(t, cp.Closing)
			assert.EqualValues(t, 3, cp.LastSeq)
		} else {
			assert.Equal(t, KindEvent, got.Kind)
		}
	}

	cmd := exec.Command(python3(t), "-I", pythonRecipe, "--chain", "billing-api", "audit:py")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(`{"action":"a","action":"b"}` + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.Error(t, cmd.Run())
	assert.Contains(t, stderr.String(), "appears twice")
}
