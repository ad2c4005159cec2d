// Command auditproc verifies signed audit events from a Redis stream and runs
// them through a pipeline of sandboxed WebAssembly plugins.
//
// main stays thin: it wires signals and exit codes around run, which takes its
// arguments and streams explicitly so tests can call it in-process.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// SIGHUP never ends auditproc (logrotate and systemd's ExecReload send it):
// it is caught from the main package's initialization on, before main runs
// (the earliest a Go program can), and run reloads its pipeline on it
// (reload.go).
func init() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
}

func main() {
	// go-redis logs through a package-level logger of its own (plain text
	// with the standard log package unless replaced): its lines go through
	// slog as JSON like every other line.
	redis.SetLogger(newRedisLogger(os.Stderr))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful shutdown; restoring the default
	// handlers then lets a second signal end the process at once (entries in
	// flight stay pending and are redelivered: nothing is lost).
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	if err != nil && !errors.Is(err, errSilent) {
		fmt.Fprintln(os.Stderr, "auditproc:", err)
	}
	os.Exit(exitCode(err))
}

// stdio is the set of streams a command reads and writes.
type stdio struct {
	in  io.Reader
	out io.Writer
	err io.Writer
}

// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// usageError marks an error as the user's (bad flags, arguments or
// configuration): the command exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errSilent is returned by a command that already told the user what went
// wrong; main only sets the exit code.
var errSilent = errors.New("silent")

// silentUsage is errSilent with exit code 2.
var silentUsage = usageError{errSilent}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	default:
		return exitFail
	}
}
