package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// redisXAdd is a raw XADD, bypassing signing: how a forger writes.
type redisXAdd struct {
	stream string
	values []any
}

func (x redisXAdd) args() *redis.XAddArgs {
	return &redis.XAddArgs{Stream: x.stream, Values: x.values}
}

func filepathGlob(p string) ([]string, error) { return filepath.Glob(p) }

func baseName(p string) string { return filepath.Base(p) }

// wantKey reads the "# want: KEY" first line of a bad configuration.
func wantKey(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	require.True(t, s.Scan())
	line, ok := strings.CutPrefix(s.Text(), "# want: ")
	require.True(t, ok, "%s must start with '# want: KEY'", path)
	return line
}

// runBinary runs auditproc without a Redis environment.
func runBinary(t *testing.T, timeout time.Duration, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("auditproc %v did not exit within %s", args, timeout)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
