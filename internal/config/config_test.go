package config_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadGoodFile(t *testing.T) {
	cfg, err := config.Load(config.Source{File: "testdata/good.yaml"})
	require.NoError(t, err)

	assert.Equal(t, "audit:stream", cfg.Stream.Name)
	assert.Equal(t, 100, cfg.Consumer.BatchSize)
	assert.Equal(t, time.Second, cfg.Consumer.Block)
	assert.Equal(t, 4, cfg.Reclaim.MaxDeliveries)
	require.Len(t, cfg.Plugins, 2)
	assert.Equal(t, 50*time.Millisecond, cfg.Plugins[0].Deadline)
	assert.Equal(t, config.ByteSize(16<<20), cfg.Plugins[0].MemoryLimit)
	assert.Equal(t, []any{"actor", "action"}, cfg.Plugins[0].Config["required"])
	// Relative plugin paths are resolved against the file's directory.
	assert.Equal(t, filepath.Join("testdata", "../../../build/wasm/schema.wasm"), cfg.Plugins[0].Path)
	assert.Equal(t, "/opt/plugins/detect.wasm", cfg.Plugins[1].Path)
	// Per-plugin defaults.
	assert.Equal(t, config.DefaultPluginDeadline, cfg.Plugins[1].Deadline)
	assert.Equal(t, config.DefaultPluginMemory, cfg.Plugins[1].MemoryLimit)
	// Untouched sections keep their defaults.
	assert.Equal(t, config.DefaultShutdownTimeout, cfg.Consumer.ShutdownTimeout)
	assert.Equal(t, config.DefaultMetricsAddr, cfg.Metrics.Address)
	assert.NotEmpty(t, cfg.Stream.Consumer)
	assert.Equal(t, config.Sink{Type: "stream", Stream: "audit:alerts"}, cfg.Sinks["alerts"])
}

func TestLoadPrecedence(t *testing.T) {
	// defaults < file < environment < flags
	cfg, err := config.Load(config.Source{
		File: "testdata/good.yaml",
		Getenv: env(map[string]string{
			"AUDITPROC_CONSUMER_WORKERS":    "6",
			"AUDITPROC_CONSUMER_BATCH_SIZE": "50",
			"AUDITPROC_REDIS_URL":           "redis://10.0.0.1:6380/2",
			"AUDITPROC_REDIS_CLUSTER_ADDRS": "a:1, b:2",
			"AUDITPROC_RECLAIM_MIN_IDLE":    "45s",
			"AUDITPROC_LOG_FORMAT":          "text",
		}),
		Flags: map[string]any{"consumer.workers": 3},
	})
	require.NoError(t, err)
	assert.Equal(t, 3, cfg.Consumer.Workers, "flag beats environment")
	assert.Equal(t, 50, cfg.Consumer.BatchSize, "environment beats file")
	assert.Equal(t, "redis://10.0.0.1:6380/2", cfg.Redis.URL)
	assert.Equal(t, []string{"a:1", "b:2"}, cfg.Redis.Cluster.Addrs)
	assert.Equal(t, 45*time.Second, cfg.Reclaim.MinIdle)
	assert.Equal(t, "text", cfg.Log.Format)
	assert.Equal(t, time.Second, cfg.Consumer.Block, "file value kept where nothing overrides it")
}

func TestLoadEnvWrongTypeNamesKey(t *testing.T) {
	_, err := config.Load(config.Source{
		File:   "testdata/good.yaml",
		Getenv: env(map[string]string{"AUDITPROC_CONSUMER_WORKERS": "lots"}),
	})
	require.ErrorIs(t, err, config.ErrInvalid)
	assert.Contains(t, err.Error(), "consumer.workers")
}

func TestSecretsComeFromEnvOrFile(t *testing.T) {
	t.Run("environment", func(t *testing.T) {
		cfg, err := config.Load(config.Source{
			File:   "testdata/good.yaml",
			Getenv: env(map[string]string{config.EnvRedisPassword: "pw-from-env"}),
		})
		require.NoError(t, err)
		assert.Equal(t, "pw-from-env", cfg.RedisPassword)
	})
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		pw := filepath.Join(dir, "pw")
		require.NoError(t, os.WriteFile(pw, []byte("pw-from-file\n"), 0o600))
		cfg, err := config.Load(config.Source{
			File:   "testdata/good.yaml",
			Getenv: env(map[string]string{"AUDITPROC_REDIS_PASSWORD_FILE": pw}),
		})
		require.NoError(t, err)
		assert.Equal(t, "pw-from-file", cfg.RedisPassword)
	})
	t.Run("unreadable file names the key, not the content", func(t *testing.T) {
		_, err := config.Load(config.Source{
			File:   "testdata/good.yaml",
			Getenv: env(map[string]string{"AUDITPROC_REDIS_PASSWORD_FILE": "/nonexistent/pw"}),
		})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redis.password_file")
	})
}

func TestSecretInFileIsNeverEchoed(t *testing.T) {
	_, err := config.Load(config.Source{File: "testdata/secret-in-file.bad.yaml"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
	assert.Contains(t, err.Error(), config.EnvRedisPassword)
}

// wantKey reads the "# want: KEY" line at the top of a bad configuration.
func wantKey(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	require.True(t, s.Scan(), "%s is empty", path)
	line := s.Text()
	require.True(t, strings.HasPrefix(line, "# want: "), "%s must start with '# want: KEY'", path)
	return strings.TrimPrefix(line, "# want: ")
}

func TestBadConfigurationsNameTheKey(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := config.Load(config.Source{File: file})
			require.Error(t, err)
			assert.Contains(t, err.Error(), wantKey(t, file))
			assert.Contains(t, err.Error(), file, "the error says which file")
		})
	}
}

func TestValidateJoinsEveryProblem(t *testing.T) {
	cfg := config.Default()
	cfg.Consumer.Workers = 0
	cfg.Consumer.BatchSize = 0
	err := cfg.Validate()
	require.ErrorIs(t, err, config.ErrInvalid)
	for _, key := range []string{"consumer.workers", "consumer.batch_size", "plugins"} {
		assert.Contains(t, err.Error(), key)
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.ByteSize
		ok   bool
	}{
		{"1024", 1024, true},
		{"64KiB", 64 << 10, true},
		{"32 MiB", 32 << 20, true},
		{"1GiB", 1 << 30, true},
		{"2MB", 2e6, true},
		{"10B", 10, true},
		{"lots", 0, false},
		{"-1MiB", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var b config.ByteSize
			err := b.UnmarshalText([]byte(tc.in))
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, b)
		})
	}
}

func TestEnvKeysDocumented(t *testing.T) {
	keys := config.EnvKeys()
	assert.Contains(t, keys, "redis.url")
	assert.Contains(t, keys, "consumer.batch_size")
	assert.NotContains(t, keys, "plugins")
	assert.Equal(t, "AUDITPROC_CONSUMER_BATCH_SIZE", config.EnvName("consumer.batch_size"))
}

// TestYAMLErrorLine: a YAML error names the line and column of the problem
// (go.yaml.in/yaml/v3 alone names the line before it for this one).
func TestYAMLErrorLine(t *testing.T) {
	cases := []struct{ text, want string }{
		{"stream:\n  name: x\n consumer: 1\nreclaim:\n  interval: 5s\n", ":3:2: not valid YAML"},
		{"stream:\n  name: x\nconsumer:\n  block: \"2s\nreclaim:\n  interval: 5s\n", ":4:10: not valid YAML"},
		{"stream:\n\tname: x\n", ":2:1: not valid YAML"},
		{"stream:\n  name: x\nstream:\n  group: y\n", ":3:1: not valid YAML"},
	}
	for _, tc := range cases {
		file := filepath.Join(t.TempDir(), "plugins.yaml")
		require.NoError(t, os.WriteFile(file, []byte(tc.text), 0o600))
		_, err := config.Load(config.Source{File: file})
		require.ErrorIs(t, err, config.ErrInvalid)
		assert.Contains(t, err.Error(), file+tc.want)
	}
}

// TestDurationsNeedAUnit: a bare number is refused wherever a duration goes
// (5 would be five nanoseconds).
func TestDurationsNeedAUnit(t *testing.T) {
	for _, key := range []string{"consumer.block", "reclaim.interval", "reclaim.min_idle", "redis.dial_timeout"} {
		section, field, _ := strings.Cut(key, ".")
		file := filepath.Join(t.TempDir(), "plugins.yaml")
		require.NoError(t, os.WriteFile(file, []byte(section+":\n  "+field+": 5\n"), 0o600))
		_, err := config.Load(config.Source{File: file, NoPipeline: true})
		require.ErrorIs(t, err, config.ErrInvalid, key)
		assert.Contains(t, err.Error(), file+":2: "+key+": 5 has no unit")

		_, err = config.Load(config.Source{NoPipeline: true, Getenv: env(map[string]string{config.EnvName(key): "5"})})
		require.ErrorIs(t, err, config.ErrInvalid, key)
		assert.Contains(t, err.Error(), config.EnvName(key)+": "+key+": 5 has no unit")
	}
	cfg, err := config.Load(config.Source{NoPipeline: true, Getenv: env(map[string]string{"AUDITPROC_CONSUMER_BLOCK": "250ms"})})
	require.NoError(t, err)
	assert.Equal(t, 250*time.Millisecond, cfg.Consumer.Block)
}

func TestUnknownVariable(t *testing.T) {
	_, err := config.Load(config.Source{NoPipeline: true, Environ: func() []string {
		return []string{"AUDITPROC_CONSUMER_WORKERS=2", "AUDITPROC_HMAC_KEYS_FILE=/x", "AUDITPROC_METRICS_ADRESS=:1", "PATH=/bin"}
	}})
	require.ErrorIs(t, err, config.ErrInvalid)
	assert.Contains(t, err.Error(), "AUDITPROC_METRICS_ADRESS: unknown variable")
	assert.Contains(t, err.Error(), "did you mean AUDITPROC_METRICS_ADDRESS?")
	assert.Len(t, config.Problems(err), 1)
}

func TestMetricsOffInFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plugins.yaml")
	require.NoError(t, os.WriteFile(file, []byte("metrics:\n  address: \"off\"\n"), 0o600))
	cfg, err := config.Load(config.Source{File: file, NoPipeline: true})
	require.NoError(t, err)
	assert.Empty(t, cfg.Metrics.Address)
}

// TestVariableNamedByTheFileIsKnown: a variable the configuration names
// (a sink's headers_from_env) is not an unknown AUDITPROC_ variable.
func TestVariableNamedByTheFileIsKnown(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plugins.yaml")
	require.NoError(t, os.WriteFile(file, []byte("metrics:\n  address: \"off\"\nlog:\n  level: info\n# AUDITPROC_MY_TOKEN\n"), 0o600))
	environ := func() []string { return []string{"AUDITPROC_MY_TOKEN=x"} }
	_, err := config.Load(config.Source{File: file, NoPipeline: true, Environ: environ})
	require.ErrorIs(t, err, config.ErrInvalid, "a comment does not name it")
	require.NoError(t, os.WriteFile(file, []byte("metrics:\n  address: \"off\"\nsinks:\n  es: {type: stdout}\nx_ref: AUDITPROC_MY_TOKEN\n"), 0o600))
	_, err = config.Load(config.Source{File: file, NoPipeline: true, Environ: environ})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "AUDITPROC_MY_TOKEN: unknown variable")
}

func TestShardConfigNamesEveryStreamOfTheShard(t *testing.T) {
	cfg := config.Default()
	cfg.Stream.Name, cfg.DeadLetter.Stream, cfg.Stream.Shards = "{audit}:stream", "{audit}:dead", 3
	cfg.Sinks = map[string]config.Sink{"out": {Type: config.SinkStream, Stream: "{audit}:out"}, "f": {Type: config.SinkFile, Path: "/tmp/x"}}
	s0, s2 := cfg.ShardConfig(0), cfg.ShardConfig(2)
	assert.Equal(t, "{audit}:stream", s0.Stream.Name)
	assert.Equal(t, "{audit:2}:stream", s2.Stream.Name)
	assert.Equal(t, "{audit:2}:dead", s2.DeadLetter.Stream)
	assert.Equal(t, "{audit:2}:out", s2.Sinks["out"].Stream)
	assert.Equal(t, "/tmp/x", s2.Sinks["f"].Path)
	assert.Equal(t, "{audit}:out", cfg.Sinks["out"].Stream, "the configuration itself is unchanged")
	assert.Equal(t, []string{"{audit}:dead", "{audit:1}:dead", "{audit:2}:dead"}, cfg.DeadLetterShards())
}
