package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// TestStatusAndDLQFlags: status on a stream with no entries yet works;
// status --group shows that group only; dlq list --stream lists the dead
// letters of that audit stream only; flags after positional arguments count.
func TestStatusAndDLQFlags(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	t.Setenv("AUDITPROC_CONFIG", "")
	t.Setenv("AUDITPROC_REDIS_URL", srv.URL())

	out, errOut, code := runCLI(t, "status", "--stream", "never:written")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "stream never:written: 0 entries")

	require.NoError(t, rdb.XGroupCreateMkStream(ctx, "st:a", "g1", "$").Err())
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, "st:a", "g2", "$").Err())
	out, errOut, code = runCLI(t, "status", "--stream", "st:a", "--group", "g2")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "group g2")
	assert.NotContains(t, out, "group g1")
	_, errOut, code = runCLI(t, "status", "--stream", "st:a", "--group", "nope")
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, `no consumer group "nope"`)

	for i, origin := range []string{"st:a", "st:b", "st:a"} {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: "st:dead", Values: map[string]any{
			integrity.FieldEvent:               `{"event_id":"e` + string(rune('0'+i)) + `"}`,
			streambus.DeadLetterOriginalStream: origin,
			streambus.DeadLetterOriginalID:     "1-" + string(rune('0'+i)),
			streambus.DeadLetterReason:         "rejected",
		}}).Err())
	}
	t.Setenv("AUDITPROC_DEAD_LETTER_STREAM", "st:dead")
	out, errOut, code = runCLI(t, "dlq", "list", "--stream", "st:a")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "2 dead-lettered entries")
	// The ORIGINAL ID column, compared whole: a dead letter's own id (a
	// time in ms, "...291-1") may hold "1-1" as a substring.
	var originals []string
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 2 && strings.Contains(f[0], "-") {
			originals = append(originals, f[1])
		}
	}
	assert.Equal(t, []string{"1-0", "1-2"}, originals, out)
	out, _, code = runCLI(t, "dlq", "list")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "3 dead-lettered entries")
}

func TestFlagsAfterPositionals(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	cfg := fs.String("config", "", "")
	all := fs.Bool("all", false, "")
	pos, err := parseInterspersed(fs, strings.Fields("ID1 --config X ID2 --all -- --not-a-flag"))
	require.NoError(t, err)
	assert.Equal(t, []string{"ID1", "ID2", "--not-a-flag"}, pos)
	assert.Equal(t, "X", *cfg)
	assert.True(t, *all)
}

// frameBuffer collects a live view's output while the command writes it.
type frameBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *frameBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *frameBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runLive runs a live view in-process until its output satisfies until, then
// cancels its context as SIGINT or SIGTERM would; it returns the output and
// the exit code. The view ending on its own, or writing to standard error,
// fails the test.
func runLive(t *testing.T, until func(out string) bool, args ...string) (string, int) {
	t.Helper()
	var out, errOut frameBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
	}()
	deadline := time.After(60 * time.Second)
	for !until(out.String()) {
		select {
		case err := <-done:
			t.Fatalf("%s ended on its own: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errOut.String())
		case <-deadline:
			t.Fatalf("no such output within 60s:\n%s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	err := <-done
	assert.Empty(t, errOut.String())
	return out.String(), exitCode(err)
}

const statusFrameHeader = "auditproc status — "

// TestStatusWatch runs `status --watch` in-process against a real Redis: it
// draws a frame at once and again every interval, each read afresh (an entry
// appended between frames shows in a later one), frames follow one another
// separated by a blank line when the output is no terminal, and the end of
// the context (SIGINT or SIGTERM in main) ends it with exit 0. With --json
// each frame is one JSON object on a line.
func TestStatusWatch(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	t.Setenv("AUDITPROC_CONFIG", "")
	t.Setenv("AUDITPROC_REDIS_URL", srv.URL())
	ctx := context.Background()
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, "st:w", "g1", "$").Err())

	watch := func(t *testing.T, until func(out string) bool, args ...string) (string, int) {
		t.Helper()
		return runLive(t, until, append([]string{"status", "--watch", "--stream", "st:w"}, args...)...)
	}

	t.Run("table", func(t *testing.T) {
		appended := false
		out, code := watch(t, func(out string) bool {
			if !appended && strings.Count(out, statusFrameHeader) >= 1 {
				require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: "st:w", Values: map[string]any{"k": "v"}}).Err())
				appended = true
			}
			return strings.Contains(out, "stream st:w: 1 entries")
		}, "--interval", "20ms")
		assert.Equal(t, exitOK, code)
		frames := strings.Split(out, "\n"+statusFrameHeader)
		require.GreaterOrEqual(t, len(frames), 2, out)
		assert.True(t, strings.HasPrefix(out, statusFrameHeader), out)
		assert.Contains(t, frames[0], "stream st:w: 0 entries")
		assert.Contains(t, frames[0], "group g1: lag 0, pending 0")
		assert.Contains(t, frames[len(frames)-1], "stream st:w: 1 entries")
		assert.Contains(t, frames[len(frames)-1], "group g1: lag 1, pending 0")
		assert.Equal(t, len(frames)-1, strings.Count(out, "\n\n"+statusFrameHeader), "frames are separated by a blank line:\n%s", out)
		assert.NotContains(t, out, clearScreen, "no terminal: the screen is never cleared")
	})

	t.Run("json", func(t *testing.T) {
		out, code := watch(t, func(out string) bool { return strings.Count(out, "\n") >= 2 }, "--json", "--group", "g1", "--interval", "20ms")
		assert.Equal(t, exitOK, code)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		var frames int
		for _, l := range lines {
			var f statusFrame
			require.NoError(t, json.Unmarshal([]byte(l), &f), l)
			assert.Equal(t, "st:w", f.Stream)
			assert.Empty(t, f.Error)
			require.Len(t, f.Groups, 1)
			assert.Equal(t, "g1", f.Groups[0].Name)
			assert.False(t, f.At.IsZero())
			frames++
		}
		assert.GreaterOrEqual(t, frames, 2)
		assert.NotContains(t, out, clearScreen)
	})

	t.Run("missing group shown in the frame", func(t *testing.T) {
		out, code := watch(t, func(out string) bool { return strings.Count(out, statusFrameHeader) >= 2 }, "--group", "nope", "--interval", "20ms")
		assert.Equal(t, exitOK, code)
		assert.Contains(t, out, `has no consumer group "nope"`)
	})
}

// TestStatusWatchBinary runs `auditproc status --watch` as a real process
// with its output on a pipe: frames keep coming, and SIGINT (then, in a second
// run, SIGTERM) ends it with exit 0.
func TestStatusWatchBinary(t *testing.T) {
	bin := buildPluginBinary(t)
	srv := redistest.Start(t)
	require.NoError(t, srv.Client(t).XGroupCreateMkStream(context.Background(), "st:bin", "g1", "$").Err())
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin, "status", "--watch", "--interval", "20ms", "--stream", "st:bin")
			cmd.Env = append(os.Environ(), "AUDITPROC_CONFIG=", "AUDITPROC_REDIS_URL="+srv.URL())
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			sc := bufio.NewScanner(stdout)
			frames := 0
			for frames < 3 && sc.Scan() {
				if strings.HasPrefix(sc.Text(), statusFrameHeader) {
					frames++
				}
			}
			require.Equal(t, 3, frames, "frames before the output ended; stderr: %s", errOut.String())
			require.NoError(t, cmd.Process.Signal(sig))
			for sc.Scan() {
			}
			err = cmd.Wait()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				t.Fatalf("exit %d after %v; stderr: %s", exit.ExitCode(), sig, errOut.String())
			}
			require.NoError(t, err)
			assert.Empty(t, errOut.String())
		})
	}
}

// TestLiveViewIntervalFlag: --interval of status --watch and of top is a
// duration with a unit, above zero; anything else is a usage error (exit 2)
// that says what to give, before anything touches Redis.
func TestLiveViewIntervalFlag(t *testing.T) {
	t.Setenv("AUDITPROC_CONFIG", "")
	// Nothing listens there: a bad interval is refused before any dial.
	t.Setenv("AUDITPROC_REDIS_URL", "redis://127.0.0.1:1")
	for _, tt := range []struct {
		value, want string
	}{
		{"5", "give a unit, as in 1s"},
		{"1", "give a unit, as in 1s"},
		{"soon", "give a unit, as in 1s"},
		{"0", "must be above zero"},
		{"0s", "must be above zero"},
		{"-1s", "must be above zero"},
	} {
		for _, cmd := range [][]string{{"status", "--watch"}, {"top"}} {
			t.Run(strings.Join(cmd, " ")+" "+tt.value, func(t *testing.T) {
				out, errOut, code := runCLI(t, append(cmd, "--interval", tt.value)...)
				assert.Equal(t, exitUsage, code)
				assert.Empty(t, out)
				assert.Contains(t, errOut, "-interval")
				assert.Contains(t, errOut, tt.value)
				assert.Contains(t, errOut, tt.want)
			})
		}
	}
	_, errOut, code := runCLI(t, "status", "--interval", "2s")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "--interval goes with --watch")

	out, _, code := runCLI(t, "status", "--help")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "  auditproc status --watch --interval 2s\n", "a runnable example")
	assert.Contains(t, out, "-watch")
	assert.Contains(t, out, "-interval")
}
