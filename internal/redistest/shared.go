package redistest

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

var shared struct {
	once sync.Once
	s    *Server
	dir  string
	err  error
}

var mainActive atomic.Bool

// Run runs the tests and then stops the server Shared started, if any. Use it
// (or Main) in TestMain of a package that calls Shared:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Run(m *testing.M) int {
	mainActive.Store(true)
	code := m.Run()
	stopShared()
	return code
}

// Main is os.Exit(Run(m)).
func Main(m *testing.M) { os.Exit(Run(m)) }

func stopShared() {
	if shared.s != nil {
		shared.s.impl.close()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}

// Shared returns the test binary's shared Redis server (default options,
// backend chosen as for Start), started on first use and stopped by Run/Main
// when the tests end. Tests sharing it must use unique keys / stream names and
// must not Stop, Kill or Restart it (use Start for that). It needs Main or Run
// in the package's TestMain.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !mainActive.Load() {
		t.Fatal("redistest.Shared needs redistest.Main(m) (or Run) in the package's TestMain: it stops the shared server when the tests end")
	}
	shared.once.Do(func() {
		cfg, err := newConfig(nil)
		if err == nil {
			shared.dir, err = os.MkdirTemp("", "redistest-shared-")
		}
		if err == nil {
			shared.s, err = launch(cfg, shared.dir, "shared")
		}
		shared.err = err
	})
	if shared.err != nil {
		var ue *unavailableError
		if errors.As(shared.err, &ue) {
			SkipOrFail(t, ue.reason)
		}
		t.Fatal(shared.err)
	}
	if !shared.s.Running() {
		t.Fatal("redistest: the shared Redis server is not running (a test stopped or killed it: use Start for that)")
	}
	return shared.s
}

// RequireDocker skips the test (or fails it under AUDITPROC_NO_SKIP=1) when no
// Docker engine answers.
func RequireDocker(t testing.TB) {
	t.Helper()
	if err := dockerAvailable(); err != nil {
		SkipOrFail(t, "redistest: Docker is required: "+err.Error())
	}
}
