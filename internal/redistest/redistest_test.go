package redistest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// backends are the backends every behaviour below is checked on.
var backends = []redistest.Backend{redistest.Process, redistest.Container}

func TestKillRestartKeepsAcknowledgedWrites(t *testing.T) {
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t)
			s := redistest.Start(t, redistest.WithBackend(b), redistest.WithAppendFsync("always"))
			require.Equal(t, b, s.Backend())
			c := s.Client(t)
			id, err := c.XAdd(ctx, &redis.XAddArgs{Stream: "audit:stream", Values: map[string]any{"k": "v"}}).Result()
			require.NoError(t, err)

			require.NoError(t, s.Kill(ctx))
			assert.False(t, s.Running())
			require.Error(t, c.Ping(ctx).Err(), "a killed server must not answer")

			require.NoError(t, s.Restart(ctx))
			assert.True(t, s.Running())
			msgs, err := c.XRange(ctx, "audit:stream", "-", "+").Result()
			require.NoError(t, err)
			require.Len(t, msgs, 1, "the entry acknowledged before SIGKILL must come back from the AOF")
			assert.Equal(t, id, msgs[0].ID)
			assert.Equal(t, "v", msgs[0].Values["k"])
		})
	}
}

func TestStopRestartKeepsData(t *testing.T) {
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t)
			s := redistest.Start(t, redistest.WithBackend(b)) // everysec: a graceful stop flushes anyway
			c := s.Client(t)
			require.NoError(t, c.Set(ctx, "key", "kept", 0).Err())

			require.NoError(t, s.Stop(ctx))
			require.NoError(t, s.Stop(ctx), "stopping a stopped server is a no-op")
			assert.False(t, s.Running())

			require.NoError(t, s.Restart(ctx))
			v, err := c.Get(ctx, "key").Result()
			require.NoError(t, err)
			assert.Equal(t, "kept", v)

			// Restart of a running server stops it first.
			require.NoError(t, s.Restart(ctx))
			v, err = s.Client(t).Get(ctx, "key").Result()
			require.NoError(t, err)
			assert.Equal(t, "kept", v)
		})
	}
}

func TestAddrAndURL(t *testing.T) {
	s := redistest.Start(t)
	require.NotEmpty(t, s.Addr())
	assert.True(t, strings.HasPrefix(s.Addr(), "127.0.0.1:"), "Addr %q must be loopback", s.Addr())
	assert.Equal(t, "redis://"+s.Addr()+"/0", s.URL())

	opt, err := redis.ParseURL(s.URL())
	require.NoError(t, err)
	c := redis.NewClient(opt)
	defer c.Close()
	require.NoError(t, c.Ping(ctxFor(t)).Err())
}

func TestWithArgs(t *testing.T) {
	s := redistest.Start(t, redistest.WithArgs("--maxmemory", "12345678"))
	got, err := s.Client(t).ConfigGet(ctxFor(t), "maxmemory").Result()
	require.NoError(t, err)
	assert.Equal(t, "12345678", got["maxmemory"])
}

func TestAppendFsyncApplied(t *testing.T) {
	for _, mode := range []string{"everysec", "always"} {
		t.Run(mode, func(t *testing.T) {
			s := redistest.Start(t, redistest.WithAppendFsync(mode))
			got, err := s.Client(t).ConfigGet(ctxFor(t), "append*").Result()
			require.NoError(t, err)
			assert.Equal(t, "yes", got["appendonly"])
			assert.Equal(t, mode, got["appendfsync"])
		})
	}
}

func TestShared(t *testing.T) {
	a := redistest.Shared(t)
	b := redistest.Shared(t)
	require.Same(t, a, b, "one shared server per test binary")
	ctx := ctxFor(t)
	key := fmt.Sprintf("shared:%s:%d", t.Name(), os.Getpid())
	require.NoError(t, a.Client(t).Set(ctx, key, "x", 0).Err())
	v, err := b.Client(t).Get(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "x", v)
}
