package redisconn_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/redisconn"
	"github.com/auditproc/auditproc/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestSlotIsRedisClusterHashSlot(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	assert.Equal(t, 12739, redisconn.Slot("123456789"))
	assert.Equal(t, 12182, redisconn.Slot("foo"))
	assert.Equal(t, redisconn.Slot("user1000"), redisconn.Slot("{user1000}.following"))
	assert.Equal(t, redisconn.Slot("{user1000}.followers"), redisconn.Slot("{user1000}.following"))
	assert.Equal(t, redisconn.Slot("foo{}{bar}"), redisconn.Slot("foo{}{bar}"), "an empty tag hashes the whole key")
	assert.NotEqual(t, redisconn.Slot("bar"), redisconn.Slot("foo{}{bar}"))
	assert.Equal(t, redisconn.Slot("{bar"), redisconn.Slot("{bar"))
}

func TestSlotAgreesWithCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	ctx := ctxT(t)
	for _, k := range []string{"audit:stream", "audit:dead", "{audit}:stream", "{x}y", "a{b}c{d}", "{}z", "é"} {
		want, err := c.Keyslot(ctx, k)
		require.NoError(t, err)
		assert.Equal(t, want, redisconn.Slot(k), k)
	}
}

func TestResolveModes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		r     config.Redis
		mode  redisconn.Mode
		addrs []string
		db    int
		user  string
		pw    string
		tls   bool
	}{
		{"redis", config.Redis{URL: "redis://u:p@127.0.0.1:7000/3"}, redisconn.Standalone, []string{"127.0.0.1:7000"}, 3, "u", "p", false},
		{"rediss default port", config.Redis{URL: "rediss://127.0.0.1"}, redisconn.Standalone, []string{"127.0.0.1:6379"}, 0, "", "", true},
		{"unix", config.Redis{URL: "unix:///run/redis.sock?db=2"}, redisconn.Standalone, []string{"/run/redis.sock"}, 2, "", "", false},
		{"sentinel url", config.Redis{URL: "redis+sentinel://app:pw@127.0.0.1:26379,127.0.0.1:26380/audit/1"}, redisconn.Sentinel, []string{"127.0.0.1:26379", "127.0.0.1:26380"}, 1, "app", "pw", false},
		{"sentinel default port", config.Redis{URL: "redis+sentinel://127.0.0.1/audit"}, redisconn.Sentinel, []string{"127.0.0.1:26379"}, 0, "", "", false},
		{"cluster url", config.Redis{URL: "rediss+cluster://127.0.0.1:7000,127.0.0.1:7001"}, redisconn.Cluster, []string{"127.0.0.1:7000", "127.0.0.1:7001"}, 0, "", "", true},
		{"seed list", config.Redis{URL: "redis://127.0.0.1:7000,127.0.0.1:7001"}, redisconn.Cluster, []string{"127.0.0.1:7000", "127.0.0.1:7001"}, 0, "", "", false},
		{"addr params", config.Redis{URL: "redis://127.0.0.1:7000?addr=127.0.0.1:7001"}, redisconn.Cluster, []string{"127.0.0.1:7000", "127.0.0.1:7001"}, 0, "", "", false},
		{"cluster.addrs", func() config.Redis {
			var r config.Redis
			r.Cluster.Addrs = []string{"127.0.0.1:7000"}
			return r
		}(), redisconn.Cluster, []string{"127.0.0.1:7000"}, 0, "", "", false},
		{"sentinel keys", func() config.Redis {
			var r config.Redis
			r.Sentinel.MasterName, r.Sentinel.Addrs = "m", []string{"127.0.0.1:26379"}
			return r
		}(), redisconn.Sentinel, []string{"127.0.0.1:26379"}, 0, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := redisconn.Resolve(tc.r, "")
			require.NoError(t, err)
			assert.Equal(t, tc.mode, got.Mode)
			assert.Equal(t, tc.addrs, got.Addrs)
			assert.Equal(t, tc.db, got.DB)
			assert.Equal(t, tc.user, got.Username)
			assert.Equal(t, tc.pw, got.Password)
			assert.Equal(t, tc.tls, got.TLS != nil)
		})
	}
	got, err := redisconn.Resolve(config.Redis{URL: "redis://u:inurl@127.0.0.1:1"}, "fromenv")
	require.NoError(t, err)
	assert.Equal(t, "fromenv", got.Password, "the environment's password wins over the URL's")
}

func TestResolveRefusesBadSettingsNamingTheKey(t *testing.T) {
	clusterDB := config.Redis{URL: "redis+cluster://127.0.0.1:7000/2"}
	both := config.Redis{URL: "redis+cluster://127.0.0.1:7000"}
	both.Sentinel.MasterName, both.Sentinel.Addrs = "m", []string{"127.0.0.1:26379"}
	noName := config.Redis{}
	noName.Sentinel.Addrs = []string{"127.0.0.1:26379"}
	badAddr := config.Redis{}
	badAddr.Cluster.Addrs = []string{"127.0.0.1:7000", "nohostport"}
	for name, tc := range map[string]struct {
		r   config.Redis
		key string
	}{
		"scheme":            {config.Redis{URL: "http://secret@127.0.0.1:6379"}, "redis.url"},
		"variant":           {config.Redis{URL: "redis+shard://127.0.0.1"}, "redis.url"},
		"no master name":    {config.Redis{URL: "redis+sentinel://127.0.0.1:26379"}, "redis.url"},
		"cluster db":        {clusterDB, "redis.url"},
		"two modes":         {both, "redis.sentinel"},
		"sentinel nameless": {noName, "redis.sentinel.master_name"},
		"bad addr":          {badAddr, "redis.cluster.addrs[1]"},
		"unknown param":     {config.Redis{URL: "redis://127.0.0.1?password=x"}, "redis.url"},
		"empty":             {config.Redis{}, "redis.url"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := redisconn.Resolve(tc.r, "")
			var fe *config.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tc.key, fe.Key)
			assert.NotContains(t, err.Error(), "secret", "a URL is never quoted")
		})
	}
}

func TestCheckLayout(t *testing.T) {
	cfg := config.Default()
	cfg.Sinks = map[string]config.Sink{"out": {Type: "stream", Stream: "audit:out"}, "log": {Type: "stdout"}}
	require.NoError(t, redisconn.CheckLayout(&cfg), "standalone takes any layout")
	cfg.Redis.Sentinel.MasterName, cfg.Redis.Sentinel.Addrs = "m", []string{"127.0.0.1:26379"}
	require.NoError(t, redisconn.CheckLayout(&cfg), "sentinel takes any layout")
	cfg.Redis.Sentinel.MasterName, cfg.Redis.Sentinel.Addrs = "", nil
	cfg.Redis.Cluster.Addrs = []string{"127.0.0.1:7000"}
	err := redisconn.CheckLayout(&cfg)
	require.ErrorIs(t, err, redisconn.ErrLayout)
	for _, want := range []string{"stream.name", `"audit:stream"`, "dead_letter.stream", `"audit:dead"`, "sinks.out.stream", `"audit:out"`} {
		assert.Contains(t, err.Error(), want)
	}
	cfg.Stream.Name, cfg.DeadLetter.Stream = "{audit}:stream", "{audit}:dead"
	cfg.Sinks["out"] = config.Sink{Type: "stream", Stream: "{audit}:out"}
	require.NoError(t, redisconn.CheckLayout(&cfg))
	cfg.Redis.Cluster.Addrs = nil
	cfg.Redis.URL = "redis+cluster://127.0.0.1:7000"
	cfg.Sinks["out"] = config.Sink{Type: "stream", Stream: "{other}:out"}
	err = redisconn.CheckLayout(&cfg)
	require.ErrorIs(t, err, redisconn.ErrLayout)
	assert.Contains(t, err.Error(), "sinks.out.stream")
}

// exercise writes and reads a stream through the client of cfg.
func exercise(t *testing.T, cfg *config.Config, wantMode redisconn.Mode) {
	t.Helper()
	ctx := ctxT(t)
	c, mode, err := redisconn.New(cfg)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, wantMode, mode)
	require.NoError(t, redisconn.Check(ctx, c, mode))
	for i := range 20 {
		key := "{s" + string(rune('a'+i)) + "}:" + time.Now().String()
		require.NoError(t, c.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"f", "v"}}).Err())
		n, err := c.XLen(ctx, key).Result()
		require.NoError(t, err)
		assert.EqualValues(t, 1, n)
	}
}

func TestClientModes(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		s := redistest.Start(t, redistest.WithArgs("--requirepass", "pw-standalone"))
		cfg := config.Default()
		cfg.Redis.URL = "redis://" + s.Addr() + "/1"
		cfg.RedisPassword = "pw-standalone"
		exercise(t, &cfg, redisconn.Standalone)
	})
	t.Run("acl user", func(t *testing.T) {
		t.Parallel()
		s := redistest.Start(t)
		admin := s.Client(t)
		require.NoError(t, admin.Do(ctxT(t), "ACL", "SETUSER", "auditproc", "on", ">pw-acl", "~*", "+@all").Err())
		cfg := config.Default()
		cfg.Redis.URL = "redis://auditproc@" + s.Addr()
		cfg.RedisPassword = "pw-acl"
		exercise(t, &cfg, redisconn.Standalone)
	})
	t.Run("unix", func(t *testing.T) {
		t.Parallel()
		sock := t.TempDir() + "/redis.sock"
		redistest.Start(t, redistest.WithBackend(redistest.Process), redistest.WithArgs("--unixsocket", sock))
		cfg := config.Default()
		cfg.Redis.URL = "unix://" + sock
		exercise(t, &cfg, redisconn.Standalone)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		c := redistest.StartCluster(t)
		cfg := config.Default()
		cfg.Redis.URL = "redis+cluster://" + strings.Join(c.Addrs()[:2], ",")
		exercise(t, &cfg, redisconn.Cluster)
		cfg = config.Default()
		cfg.Redis.URL = ""
		cfg.Redis.Cluster.Addrs = c.Addrs()[2:3]
		exercise(t, &cfg, redisconn.Cluster)
	})
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		s := redistest.StartSentinel(t)
		cfg := config.Default()
		cfg.Redis.URL = "redis+sentinel://" + strings.Join(s.Addrs(), ",") + "/" + redistest.SentinelMasterName
		exercise(t, &cfg, redisconn.Sentinel)
	})
}

func TestCheckClassifiesErrors(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.WithArgs("--requirepass", "right"))
	admin := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: "right"})
	defer admin.Close()
	ctx := ctxT(t)
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "weak", "on", ">weakpw", "~*", "-@all", "+hello", "+auth").Err())
	open := redistest.Start(t)

	notRedis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer notRedis.Close()
	go func() {
		for {
			c, err := notRedis.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			time.Sleep(100 * time.Millisecond)
			_ = c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	require.NoError(t, closed.Close())

	for _, tc := range []struct {
		name, url, password string
		cluster             bool
		permanent           bool
		code                string
	}{
		{"WRONGPASS", "redis://" + s.Addr(), "wrong", false, true, "WRONGPASS"},
		{"NOAUTH", "redis://" + s.Addr(), "", false, true, "NOAUTH"},
		{"NOPERM", "redis://weak@" + s.Addr(), "weakpw", false, true, "NOPERM"},
		{"not Redis", "redis://" + notRedis.Addr().String(), "", false, true, ""},
		{"cluster mode against a standalone server", "redis+cluster://" + open.Addr(), "", true, true, ""},
		{"closed port", "redis://" + closedAddr, "", false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Redis.URL, cfg.RedisPassword = tc.url, tc.password
			cfg.Redis.DialTimeout, cfg.Redis.IOTimeout = time.Second, time.Second
			c, mode, err := redisconn.New(&cfg)
			require.NoError(t, err)
			defer c.Close()
			err = redisconn.Check(ctx, c, mode)
			require.Error(t, err)
			var pe *redisconn.PermanentError
			assert.Equal(t, tc.permanent, redisconn.IsPermanent(err), "%v", err)
			assert.Equal(t, tc.permanent, errorAs(err, &pe), "%v", err)
			if tc.code != "" {
				assert.True(t, redis.HasErrorPrefix(err, tc.code), "%v", err)
			}
			assert.NotContains(t, err.Error(), "right")
			assert.NotContains(t, err.Error(), "weakpw")
		})
	}
	assert.False(t, redisconn.IsPermanent(nil))
	assert.False(t, redisconn.IsPermanent(context.DeadlineExceeded))
	assert.False(t, redisconn.IsPermanent(redis.Nil))
}

func errorAs(err error, target **redisconn.PermanentError) bool {
	return errors.As(err, target)
}

// The YAML examples of docs/configuration.md load, and pass the layout
// check in the mode they select.
func TestConfigurationDocExamplesAreValid(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	require.NotEmpty(t, blocks)
	modes := map[redisconn.Mode]bool{}
	for i, b := range blocks {
		body, _, ok := strings.Cut(b, "```")
		require.True(t, ok)
		path := filepath.Join(t.TempDir(), "example.yaml")
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		cfg, err := config.Load(config.Source{File: path, NoPipeline: true})
		require.NoError(t, err, "example %d:\n%s", i, body)
		require.NoError(t, redisconn.CheckLayout(&cfg), "example %d", i)
		tg, err := redisconn.Resolve(cfg.Redis, "")
		require.NoError(t, err)
		modes[tg.Mode] = true
	}
	assert.Len(t, modes, 3, "an example for each mode")
}
