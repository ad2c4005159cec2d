package redistest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

// backends runs f once per backend, as a subtest.
func backends(t *testing.T, f func(t *testing.T, b Backend)) {
	for _, b := range []Backend{Process, Container} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t *testing.T, ctx context.Context, c *redis.Client, key, want string) {
	t.Helper()
	got, err := c.Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if got != want {
		t.Fatalf("GET %s = %q, want %q", key, got, want)
	}
}

func TestKillRestartKeepsData(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		ctx := ctxT(t)
		s := Start(t, WithBackend(b), WithAppendFsync("always"))
		if s.Backend() != b {
			t.Fatalf("Backend() = %v, want %v", s.Backend(), b)
		}
		c := s.Client(t)
		if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"f", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
		before := s.Addr()
		if err := s.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		if s.Running() {
			t.Fatal("Running() after Kill")
		}
		if a := s.Addr(); a != "" && ping(ctx, a) == nil {
			t.Fatal("PING answered after Kill")
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if b == Process && s.Addr() != before {
			t.Fatalf("process Addr changed across restart: %s -> %s", before, s.Addr())
		}
		t.Logf("%v: addr %s -> %s", b, before, s.Addr())
		mustGet(t, ctx, c, "k", "v1") // same client: reconnects (to the new port)
		if n, err := c.XLen(ctx, "s").Result(); err != nil || n != 1 {
			t.Fatalf("XLEN s = %d, %v; want 1", n, err)
		}
	})
}

func TestStopRestartKeepsData(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		ctx := ctxT(t)
		s := Start(t, WithBackend(b)) // everysec: a graceful stop still flushes
		c := s.Client(t)
		if err := c.Set(ctx, "k", "v2", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Stop(ctx); err != nil { // no-op
			t.Fatal(err)
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, c, "k", "v2")
		// Restart of a running server: stop first, data kept.
		if err := c.Set(ctx, "k", "v3", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, c, "k", "v3")
		// A fresh client on URL works too.
		opt, err := redis.ParseURL(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		c2 := redis.NewClient(opt)
		defer c2.Close()
		mustGet(t, ctx, c2, "k", "v3")
	})
}

func TestArgsAndFsync(t *testing.T) {
	ctx := ctxT(t)
	s := Start(t, WithBackend(Process), WithAppendFsync("always"), WithArgs("--maxmemory", "12mb"))
	c := s.Client(t)
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"appendonly": "yes", "appendfsync": "always", "save": "", "maxmemory": "12582912"} {
		if cfg[k] != want {
			t.Errorf("CONFIG GET %s = %q, want %q", k, cfg[k], want)
		}
	}
	if !strings.Contains(s.Logs(), "Ready to accept connections") {
		t.Errorf("log does not show a ready server:\n%s", s.Logs())
	}
}

func TestBadStartReportsLog(t *testing.T) {
	if _, err := redisServerPath(); err != nil {
		SkipOrFail(t, err.Error())
	}
	cfg, err := newConfig([]Option{WithBackend(Process), WithArgs("--no-such-option", "1")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = launch(cfg, t.TempDir(), t.Name())
	if err == nil {
		t.Fatal("launch with a bad option succeeded")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Fatalf("error does not carry the server's complaint: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	if _, err := newConfig([]Option{WithAppendFsync("sometimes")}); err == nil {
		t.Error("appendfsync sometimes accepted")
	}
	if _, err := newConfig([]Option{WithBackend(Process), WithNetwork("n", "a")}); err == nil {
		t.Error("WithNetwork with the process backend accepted")
	}
	cfg, err := newConfig([]Option{WithNetwork("n", "a")})
	if err != nil || cfg.backend != Container {
		t.Errorf("WithNetwork: backend %v, %v; want container", cfg.backend, err)
	}
	t.Setenv(EnvBackend, "bogus")
	if _, err := chooseBackend(Auto); err == nil {
		t.Error("AUDITPROC_REDIS_BACKEND=bogus accepted")
	}
}

func TestShared(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := Shared(t)
			c := s.Client(t)
			ctx := ctxT(t)
			key := "shared:" + t.Name()
			if err := c.Set(ctx, key, name, 0).Err(); err != nil {
				t.Fatal(err)
			}
			mustGet(t, ctx, c, key, name)
		})
	}
	if first, second := Shared(t), Shared(t); first != second {
		t.Fatal("Shared returned two servers")
	}
}

func TestSkipOrFail(t *testing.T) {
	// SkipOrFail must skip without AUDITPROC_NO_SKIP and fail with it; run it
	// on a fake TB to observe which.
	for _, noSkip := range []string{"", "1"} {
		t.Setenv(EnvNoSkip, noSkip)
		ft := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			SkipOrFail(ft, "the reason")
		}()
		<-done
		if noSkip == "1" && (!ft.failed || ft.skipped) {
			t.Errorf("NO_SKIP=1: failed=%v skipped=%v, want a failure", ft.failed, ft.skipped)
		}
		if noSkip == "" && (ft.failed || !ft.skipped) {
			t.Errorf("NO_SKIP unset: failed=%v skipped=%v, want a skip", ft.failed, ft.skipped)
		}
		if !strings.Contains(ft.msg, "the reason") {
			t.Errorf("message %q lacks the reason", ft.msg)
		}
	}
}

// fakeTB records Fatalf and Skip instead of ending the real test.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
