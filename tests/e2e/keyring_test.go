package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
)

// get returns the status and body of http://addr/path.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// metricValue is the value of the sample line that starts with series in a
// /metrics body, -1 when there is none.
func metricValue(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestKeyringMismatchSuspectedByRun: `auditproc run --force` with other
// bytes under the producers' key id suspects a keyring mismatch: it logs
// keyring_mismatch_suspected, /readyz answers 503 naming the key id, the
// gauge is 1, and the entries stay pending however often they are claimed.
// Run again with the right keyring, the same entries are processed, none
// dead-lettered.
func TestKeyringMismatchSuspectedByRun(t *testing.T) {
	e := newEnv(t)
	const n = 30
	e.emitNumbered(stream, n, "")
	cfg := e.config(pipeline(`{"sink": "out"}`))

	other, err := integrity.GenerateKey()
	require.NoError(t, err)
	wrong := filepath.Join(e.dir, "wrong-keys")
	require.NoError(t, os.WriteFile(wrong, []byte(integrity.FormatKeyLine("e2e", other)+"\n"), 0o600))
	metrics := freeAddr(t)
	p := e.startEnv([]string{"AUDITPROC_HMAC_KEYS_FILE=" + wrong},
		"run", "--config", cfg, "--force", "--consumer", "c1", "--metrics-addr", metrics)
	waitFor(t, 30*time.Second, "keyring_mismatch_suspected", func() bool { return len(p.logLines("keyring_mismatch_suspected")) > 0 })
	// Each entry claimed past max_deliveries (3) would have been
	// dead-lettered.
	waitFor(t, 60*time.Second, "the entries to be claimed past their delivery budget", func() bool {
		_, body := get(t, metrics, "/metrics")
		return metricValue(body, "auditproc_entries_reclaimed_total") >= 4*n
	})
	code, body := get(t, metrics, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "keyring mismatch suspected for key id e2e")
	_, body = get(t, metrics, "/metrics")
	assert.EqualValues(t, 1, metricValue(body, `auditproc_keyring_mismatch_suspected{key_id="e2e"}`), "auditproc_keyring_mismatch_suspected")
	assert.EqualValues(t, 0, metricValue(body, "auditproc_ready"), "auditproc_ready")
	assert.Zero(t, e.xlen(dlq), "nothing dead-lettered")
	assert.Zero(t, e.xlen(out), "nothing processed")
	assert.EqualValues(t, n, e.pending(stream, group), "every entry pending")
	p.signal(syscall.SIGTERM)
	require.Equal(t, 0, p.wait(30*time.Second))
	lines := p.logLines("keyring_mismatch_suspected")
	require.Len(t, lines, 1)
	assert.Equal(t, "e2e", lines[0]["key_id"])
	assert.EqualValues(t, n, lines[0]["failures"])
	assert.NotContains(t, p.stderr.String(), hex.EncodeToString(other), "no key material in the log")
	assert.NotContains(t, p.stderr.String(), base64.StdEncoding.EncodeToString(other), "no key material in the log")

	code, _, stderr := e.run(60*time.Second, "run", "--config", cfg, "--consumer", "c1", "--stop-when-idle")
	require.Equal(t, 0, code, stderr)
	assert.EqualValues(t, n, e.records(out), "with the right keyring every entry is processed")
	assert.Zero(t, e.xlen(dlq))
	assert.Zero(t, e.pending(stream, group))
}
