package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults. Each is written in the doc comment of the field it fills.
const (
	DefaultRedisURL        = "redis://127.0.0.1:6379/0"
	DefaultStream          = "audit:stream"
	DefaultGroup           = "audit-consumers"
	DefaultDeadLetter      = "audit:dead"
	DefaultBatchSize       = 256
	DefaultBlock           = 2 * time.Second
	DefaultWorkers         = 2
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultStateDirName is the state directory's name under the system's
	// temporary directory (os.TempDir) when consumer.state_dir is not set.
	DefaultStateDirName    = "auditproc-state"
	DefaultReclaimInterval = 5 * time.Second
	DefaultMinIdle         = 60 * time.Second
	DefaultMaxDeliveries   = 5
	DefaultDialTimeout     = 5 * time.Second
	DefaultIOTimeout       = 3 * time.Second
	// DefaultMinReplicasTimeout bounds the wait for replicas
	// (redis.min_replicas_acked).
	DefaultMinReplicasTimeout = time.Second
	DefaultPluginDeadline     = 100 * time.Millisecond
	DefaultPluginMemory       = ByteSize(32 << 20)
	DefaultLogFormat          = "auto"
	DefaultLogLevel           = "info"
	DefaultMetricsAddr        = "127.0.0.1:9464"
	// DefaultGapGrace: a sequence gap is an alarm once this old.
	DefaultGapGrace = 30 * time.Second
	// DefaultCheckpointEvery and DefaultCheckpointInterval: auditproc's own
	// chains checkpoint every 1000 entries or 60 s.
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 60 * time.Second

	// deadlineBudget is how much of the reclaim idle time the plugins'
	// deadlines together may use: a slow but living consumer must finish an
	// event well before another replica may claim it.
	deadlineBudget = 0.5
)

// Config is the whole configuration of `auditproc run`.
type Config struct {
	Redis      Redis           `koanf:"redis"`
	Stream     Stream          `koanf:"stream"`
	Consumer   Consumer        `koanf:"consumer"`
	Reclaim    Reclaim         `koanf:"reclaim"`
	DeadLetter DeadLetter      `koanf:"dead_letter"`
	Sinks      map[string]Sink `koanf:"sinks"`
	Plugins    []Plugin        `koanf:"plugins"`
	Metrics    Metrics         `koanf:"metrics"`
	Log        Log             `koanf:"log"`
	Safety     Safety          `koanf:"safety"`
	Host       Host            `koanf:"host"`
	Integrity  Integrity       `koanf:"integrity"`

	// Secrets, filled from the environment or files only (never YAML).
	RedisPassword string `koanf:"-"`
}

// Redis is the connection (built by internal/redisconn): one server,
// Sentinel (sentinel.master_name and sentinel.addrs, or a redis+sentinel://
// URL) or Cluster (cluster.addrs, or a redis+cluster:// URL or seed list).
type Redis struct {
	// URL is redis:// or rediss:// (TLS), unix:///path.sock,
	// redis+sentinel://host:port,host:port/master[/db] or
	// redis+cluster://host:port,host:port (a seed list), with an optional
	// user; the password comes from the environment or password_file.
	// Default DefaultRedisURL. Env AUDITPROC_REDIS_URL.
	URL string `koanf:"url"`
	// PasswordFile holds the password; AUDITPROC_REDIS_PASSWORD wins over it.
	PasswordFile string `koanf:"password_file"`
	TLS          TLS    `koanf:"tls"`
	Sentinel     struct {
		MasterName string   `koanf:"master_name"`
		Addrs      []string `koanf:"addrs"`
	} `koanf:"sentinel"`
	Cluster struct {
		Addrs []string `koanf:"addrs"`
	} `koanf:"cluster"`
	// DialTimeout default DefaultDialTimeout.
	DialTimeout time.Duration `koanf:"dial_timeout"`
	// IOTimeout bounds each read and write (blocking reads add their block
	// time). Default DefaultIOTimeout.
	IOTimeout time.Duration `koanf:"io_timeout"`
	// MinReplicasAcked is how many replicas must hold an append (producers)
	// or a commit (the processor) before it counts as done (Redis WAIT).
	// Default 0: the master's reply is enough.
	MinReplicasAcked int `koanf:"min_replicas_acked"`
	// MinReplicasTimeout bounds that wait. Default DefaultMinReplicasTimeout.
	MinReplicasTimeout time.Duration `koanf:"min_replicas_timeout"`
}

// TLS settings; a rediss:// URL turns TLS on too.
type TLS struct {
	Enabled    bool   `koanf:"enabled"`
	CAFile     string `koanf:"ca_file"`
	CertFile   string `koanf:"cert_file"`
	KeyFile    string `koanf:"key_file"`
	ServerName string `koanf:"server_name"`
}

// Stream names the audit stream and its consumer group.
type Stream struct {
	// Name default DefaultStream.
	Name string `koanf:"name"`
	// Group default DefaultGroup.
	Group string `koanf:"group"`
	// Consumer is this replica's name in the group; default host name and
	// process id, unique per replica.
	Consumer string `koanf:"consumer"`
	// Shards splits the trail into this many streams, each with its own
	// group, dead-letter stream and sink streams (ShardConfig names them).
	// Default DefaultShards: the configured names, unchanged.
	Shards int `koanf:"shards"`
	// PartitionKey names a top-level event field: producers send events
	// with the same value to the same shard (ShardOf). Empty: events spread
	// evenly.
	PartitionKey string `koanf:"partition_key"`
}

// Consumer tunes the read loop.
type Consumer struct {
	// BatchSize is the COUNT of each read. Default DefaultBatchSize.
	BatchSize int `koanf:"batch_size"`
	// Block is how long one read waits for new entries. Default DefaultBlock.
	Block time.Duration `koanf:"block"`
	// Workers run the pipeline concurrently, each with its own plugin
	// instances. Default DefaultWorkers.
	Workers int `koanf:"workers"`
	// ShutdownTimeout bounds the drain of in-flight events on SIGTERM.
	// Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// StateDir holds the crash journal: the entries each worker is running,
	// so that after a crash only those are charged an attempt. It should
	// survive a restart of the process (a volume in a container). Empty
	// turns crash containment off. Default: DefaultStateDirName under
	// os.TempDir().
	StateDir string `koanf:"state_dir"`
}

// Reclaim governs pending entries of failed or dead consumers.
type Reclaim struct {
	// Interval between XAUTOCLAIM sweeps. Default DefaultReclaimInterval.
	Interval time.Duration `koanf:"interval"`
	// MinIdle is how long an entry must be pending before it is claimed.
	// Default DefaultMinIdle.
	MinIdle time.Duration `koanf:"min_idle"`
	// MaxDeliveries moves an entry to the dead-letter stream once it had this
	// many real attempts without success (failed runs, and runs during which
	// the process died; claims and reads do not count). Default
	// DefaultMaxDeliveries.
	MaxDeliveries int `koanf:"max_deliveries"`
}

// DeadLetter is where rejected and exhausted entries go.
type DeadLetter struct {
	// Stream default DefaultDeadLetter.
	Stream string `koanf:"stream"`
}

// Sink is a destination plugins may emit to (when granted). Which keys
// apply depends on Type; docs/sinks.md describes each type and what it
// guarantees.
type Sink struct {
	// Type is "stream" (a Redis stream; entries are signed like any audit
	// event and committed atomically with the ack), "file" (JSON lines,
	// at-least-once), "stdout" (JSON lines, at-least-once), or one of the
	// external destinations, written and confirmed before the ack (at least
	// once, idempotent on event_id): "postgres", "syslog" or "http".
	Type string `koanf:"type"`
	// Stream is the Redis stream of a "stream" sink.
	Stream string `koanf:"stream"`
	// Path is the file of a "file" sink.
	Path string `koanf:"path"`

	// URL of a "postgres" sink (a libpq URL without password; TLS with
	// sslmode, sslrootcert, sslcert, sslkey) or an "http" sink.
	URL string `koanf:"url"`
	// Table of a "postgres" sink, created when missing. Default
	// sink.DefaultPostgresTable (audit_events).
	Table string `koanf:"table"`
	// PasswordEnv names the environment variable holding the PostgreSQL
	// password; PasswordFile is a file holding it. Never the password itself.
	PasswordEnv  string `koanf:"password_env"`
	PasswordFile string `koanf:"password_file"`

	// Address (host:port) of a "syslog" collector.
	Address string `koanf:"address"`
	// TLS: syslog over TLS (RFC 5425) instead of plain TCP.
	TLS bool `koanf:"tls"`
	// CAFile, CertFile, KeyFile and ServerName configure TLS of "syslog"
	// and https "http" sinks (relative to the configuration file).
	CAFile     string `koanf:"ca_file"`
	CertFile   string `koanf:"cert_file"`
	KeyFile    string `koanf:"key_file"`
	ServerName string `koanf:"server_name"`
	// Facility, Severity, Hostname, AppName, MsgID and SDID shape "syslog"
	// messages; see sink.SyslogConfig for their defaults.
	Facility string `koanf:"facility"`
	Severity string `koanf:"severity"`
	Hostname string `koanf:"hostname"`
	AppName  string `koanf:"app_name"`
	MsgID    string `koanf:"msg_id"`
	SDID     string `koanf:"sd_id"`

	// Preset of an "http" sink: splunk_hec, elasticsearch, opensearch, loki.
	Preset string `koanf:"preset"`
	// Format of an "http" sink without preset: json (default) or ndjson.
	Format string `koanf:"format"`
	// Index of the elasticsearch and opensearch presets.
	Index string `koanf:"index"`
	// Labels of the loki preset's stream. Default {job: auditproc}.
	Labels map[string]string `koanf:"labels"`
	// HeadersFromEnv maps header names to the environment variables holding
	// their values (tokens never live in this file).
	HeadersFromEnv map[string]string `koanf:"headers_from_env"`
	// IdempotencyHeader of an "http" sink. Default Idempotency-Key.
	IdempotencyHeader string `koanf:"idempotency_header"`
	// MaxAttempts of one "http" write before the entries wait for the next
	// round. Default sink.DefaultHTTPMaxAttempts.
	MaxAttempts int `koanf:"max_attempts"`
	// Backoff: the first pause between "http" attempts. Default
	// sink.DefaultHTTPBackoff.
	Backoff time.Duration `koanf:"backoff"`
	// Timeout bounds one write of an external sink. Default 10s.
	Timeout time.Duration `koanf:"timeout"`
}

// External reports whether the sink is an external destination (postgres,
// syslog, http).
func (s Sink) External() bool {
	switch s.Type {
	case SinkPostgres, SinkSyslog, SinkHTTP:
		return true
	}
	return false
}

// Sink types.
const (
	SinkStream   = "stream"
	SinkFile     = "file"
	SinkStdout   = "stdout"
	SinkPostgres = "postgres"
	SinkSyslog   = "syslog"
	SinkHTTP     = "http"
)

// Plugin is one step of the pipeline, in order.
type Plugin struct {
	Name string `koanf:"name"`
	// Path of the .wasm module, relative to the configuration file.
	Path string `koanf:"path"`
	// SHA256 pins the module's digest (hex); a mismatch refuses to load.
	SHA256 string `koanf:"sha256"`
	// Config is handed to the plugin's auditproc_init as JSON.
	Config map[string]any `koanf:"config"`
	// MemoryLimit caps the instance's memory. Default DefaultPluginMemory.
	MemoryLimit ByteSize `koanf:"memory_limit"`
	// Deadline per event. Default DefaultPluginDeadline.
	Deadline time.Duration `koanf:"deadline"`
	// Trusted turns the deadline guard off (faster; a runaway plugin then
	// cannot be stopped). Default false.
	Trusted bool `koanf:"trusted"`
	// Sinks this plugin may emit to.
	Sinks []string `koanf:"sinks"`
	// MaxEventsPerInstance recycles an instance after that many events;
	// 0 means the host's default.
	MaxEventsPerInstance int `koanf:"max_events_per_instance"`
}

// Metrics serves /metrics, /healthz and /readyz.
type Metrics struct {
	// Address to listen on; empty disables. Default DefaultMetricsAddr.
	Address string `koanf:"address"`
}

// Log output.
type Log struct {
	// Format is json, text or auto (text on a terminal). Default DefaultLogFormat.
	Format string `koanf:"format"`
	// Level is debug, info, warn or error. Default DefaultLogLevel.
	Level string `koanf:"level"`
}

// Safety checks at start.
type Safety struct {
	// RequireDurableRedis refuses to start when Redis may evict keys
	// (maxmemory-policy other than noeviction) or keeps no AOF; otherwise a
	// warning is logged. Default false.
	RequireDurableRedis bool `koanf:"require_durable_redis"`
}

// Integrity is what auditproc demands of the trail (docs/trail.md).
type Integrity struct {
	// RequireChain refuses envelope version 1 entries (no chain) as
	// malformed_envelope. Default false: version 1 still verifies.
	RequireChain bool `koanf:"require_chain"`
	// GapGrace is how long a skipped sequence number of a source may stay
	// missing (entries of one source may arrive out of order) before
	// audit_sequence_gap is logged. Default DefaultGapGrace.
	GapGrace time.Duration `koanf:"gap_grace"`
	// CheckpointEvery and CheckpointInterval are the checkpoint policy of
	// auditproc's own chains (sink emits, dead letters). Defaults
	// DefaultCheckpointEvery and DefaultCheckpointInterval.
	CheckpointEvery    int           `koanf:"checkpoint_every"`
	CheckpointInterval time.Duration `koanf:"checkpoint_interval"`
}

// Host tunes the plugin host.
type Host struct {
	// CacheDir keeps compiled plugins across restarts; empty keeps them in
	// memory only.
	CacheDir string `koanf:"cache_dir"`
}

// ByteSize is a size in bytes, written in YAML as an integer or with a unit:
// "64KiB", "32MiB", "1GiB" (also KB/MB/GB as powers of 1000).
type ByteSize uint64

// UnmarshalText parses a size with an optional unit.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	units := []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := uint64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("invalid size %q: want a whole number with an optional unit (KiB, MiB, GiB)", string(text))
	}
	*b = ByteSize(n * mult)
	return nil
}

// Default returns the configuration with every default applied.
func Default() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "auditproc"
	}
	return Config{
		Redis: Redis{URL: DefaultRedisURL, DialTimeout: DefaultDialTimeout, IOTimeout: DefaultIOTimeout,
			MinReplicasTimeout: DefaultMinReplicasTimeout},
		Stream: Stream{
			Name:     DefaultStream,
			Group:    DefaultGroup,
			Consumer: fmt.Sprintf("%s-%d", host, os.Getpid()),
			Shards:   DefaultShards,
		},
		Integrity: Integrity{GapGrace: DefaultGapGrace, CheckpointEvery: DefaultCheckpointEvery, CheckpointInterval: DefaultCheckpointInterval},
		Consumer: Consumer{
			BatchSize:       DefaultBatchSize,
			Block:           DefaultBlock,
			Workers:         DefaultWorkers,
			ShutdownTimeout: DefaultShutdownTimeout,
			StateDir:        filepath.Join(os.TempDir(), DefaultStateDirName),
		},
		Reclaim: Reclaim{
			Interval:      DefaultReclaimInterval,
			MinIdle:       DefaultMinIdle,
			MaxDeliveries: DefaultMaxDeliveries,
		},
		DeadLetter: DeadLetter{Stream: DefaultDeadLetter},
		Metrics:    Metrics{Address: DefaultMetricsAddr},
		Log:        Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
	}
}

// applyPluginDefaults fills the per-plugin defaults (plugins come as a list,
// so they cannot be pre-filled before the file is read).
func (c *Config) applyPluginDefaults() {
	for i := range c.Plugins {
		p := &c.Plugins[i]
		if p.Deadline == 0 {
			p.Deadline = DefaultPluginDeadline
		}
		if p.MemoryLimit == 0 {
			p.MemoryLimit = DefaultPluginMemory
		}
	}
}

// FieldError is a configuration error naming the key it is about and where
// its value came from.
type FieldError struct {
	Key string // dotted path, e.g. "plugins[1].deadline"; "" for a whole file or variable
	Msg string
	// Origin is where the value was set: "plugins.yaml:23",
	// "AUDITPROC_CONSUMER_BLOCK", "--workers"; "" when not known, "default"
	// for a default value.
	Origin string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Origin != "" {
		b.WriteString(e.Origin)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("config: invalid configuration")

// Validate checks every field and the rules across fields; the error joins
// one *FieldError per problem.
func (c *Config) Validate() error {
	var errs []error
	for _, e := range c.problems(true) {
		errs = append(errs, e)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
}

// problems returns one *FieldError per broken rule.
func (c *Config) problems(pipeline bool) []*FieldError {
	var errs []*FieldError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Redis.URL == "" && len(c.Redis.Cluster.Addrs) == 0 && len(c.Redis.Sentinel.Addrs) == 0 {
		bad("redis.url", "is empty: give a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL")
	} else if c.Redis.URL != "" && !hasAnyPrefix(c.Redis.URL, "redis://", "rediss://", "unix://",
		"redis+sentinel://", "rediss+sentinel://", "redis+cluster://", "rediss+cluster://") {
		bad("redis.url", "must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://")
	}
	if len(c.Redis.Sentinel.Addrs) > 0 && c.Redis.Sentinel.MasterName == "" {
		bad("redis.sentinel.master_name", "is required with redis.sentinel.addrs")
	}
	if c.Redis.DialTimeout <= 0 {
		bad("redis.dial_timeout", "must be positive, got %s", c.Redis.DialTimeout)
	}
	if c.Redis.IOTimeout <= 0 {
		bad("redis.io_timeout", "must be positive, got %s", c.Redis.IOTimeout)
	}
	if c.Integrity.GapGrace <= 0 {
		bad("integrity.gap_grace", "must be positive, got %s", c.Integrity.GapGrace)
	}
	if c.Integrity.CheckpointEvery <= 0 {
		bad("integrity.checkpoint_every", "must be positive, got %d", c.Integrity.CheckpointEvery)
	}
	if c.Integrity.CheckpointInterval <= 0 {
		bad("integrity.checkpoint_interval", "must be positive, got %s", c.Integrity.CheckpointInterval)
	}
	if c.Stream.Name == "" {
		bad("stream.name", "is empty")
	}
	if c.Stream.Group == "" {
		bad("stream.group", "is empty")
	}
	if c.Stream.Consumer == "" {
		bad("stream.consumer", "is empty")
	}
	if c.Stream.Shards < 1 || c.Stream.Shards > MaxShards {
		bad("stream.shards", "must be between 1 and %d, got %d", MaxShards, c.Stream.Shards)
	}
	if c.Stream.PartitionKey != "" && !validFieldName(c.Stream.PartitionKey) {
		bad("stream.partition_key", "must name a top-level event field (1-128 printable characters, no spaces), got %q", c.Stream.PartitionKey)
	} else if c.Stream.PartitionKey == "event_id" || c.Stream.PartitionKey == "timestamp" {
		bad("stream.partition_key", "%q is stamped by the producer, not set by the service: name a field of the service's (actor, tenant, ...); without a key, events spread evenly", c.Stream.PartitionKey)
	}
	if c.Redis.MinReplicasAcked < 0 {
		bad("redis.min_replicas_acked", "must be 0 or more, got %d", c.Redis.MinReplicasAcked)
	}
	if c.Redis.MinReplicasTimeout <= 0 {
		bad("redis.min_replicas_timeout", "must be positive, got %s", c.Redis.MinReplicasTimeout)
	} else if c.Redis.MinReplicasAcked > 0 && c.Redis.IOTimeout > 0 && c.Redis.MinReplicasTimeout >= c.Redis.IOTimeout {
		// WAIT's answer comes on the write's connection, read within
		// io_timeout like any reply.
		bad("redis.min_replicas_timeout", "must be shorter than redis.io_timeout (%s), got %s", c.Redis.IOTimeout, c.Redis.MinReplicasTimeout)
	}
	if c.Consumer.BatchSize < 1 || c.Consumer.BatchSize > 10000 {
		bad("consumer.batch_size", "must be between 1 and 10000, got %d", c.Consumer.BatchSize)
	}
	if c.Consumer.Block <= 0 {
		bad("consumer.block", "must be positive (a zero block would wait forever), got %s", c.Consumer.Block)
	}
	if c.Consumer.Workers < 1 || c.Consumer.Workers > 256 {
		bad("consumer.workers", "must be between 1 and 256, got %d", c.Consumer.Workers)
	}
	if c.Consumer.ShutdownTimeout <= 0 {
		bad("consumer.shutdown_timeout", "must be positive, got %s", c.Consumer.ShutdownTimeout)
	}
	if c.Reclaim.Interval <= 0 {
		bad("reclaim.interval", "must be positive, got %s", c.Reclaim.Interval)
	}
	if c.Reclaim.MinIdle < time.Second {
		bad("reclaim.min_idle", "must be at least 1s, got %s", c.Reclaim.MinIdle)
	}
	if c.Reclaim.MaxDeliveries < 1 {
		bad("reclaim.max_deliveries", "must be at least 1, got %d", c.Reclaim.MaxDeliveries)
	}
	if c.DeadLetter.Stream == "" {
		bad("dead_letter.stream", "is empty")
	} else if c.DeadLetter.Stream == c.Stream.Name {
		bad("dead_letter.stream", "must differ from stream.name (%q)", c.Stream.Name)
	}
	for name, s := range c.Sinks {
		key := "sinks." + name
		switch s.Type {
		case SinkStream:
			if s.Stream == "" {
				bad(key+".stream", "is required for a stream sink")
			} else if s.Stream == c.Stream.Name {
				bad(key+".stream", "must differ from stream.name (%q): emits would be processed again", c.Stream.Name)
			}
		case SinkFile:
			if s.Path == "" {
				bad(key+".path", "is required for a file sink")
			}
		case SinkStdout:
		case SinkPostgres, SinkSyslog, SinkHTTP:
			if err := s.validateExternal(); err != nil {
				bad(key, "%v", err)
			}
		case "":
			bad(key+".type", "is required: stream, file, stdout, postgres, syslog or http")
		default:
			bad(key+".type", "must be stream, file, stdout, postgres, syslog or http, got %q", s.Type)
		}
		if misplaced := s.misplacedKeys(); len(misplaced) > 0 {
			bad(key, "%s not apply to a %s sink", strings.Join(misplaced, ", ")+map[bool]string{true: " does", false: " do"}[len(misplaced) == 1], s.Type)
		}
	}
	errs = append(errs, c.shardClashes()...)
	if pipeline && len(c.Plugins) == 0 {
		bad("plugins", "is empty: the pipeline needs at least one plugin")
	}
	names := map[string]int{}
	var total time.Duration
	for i, p := range c.Plugins {
		key := fmt.Sprintf("plugins[%d]", i)
		if p.Name == "" {
			bad(key+".name", "is required")
		} else if j, dup := names[p.Name]; dup {
			bad(key+".name", "%q is already the name of plugins[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		if p.Path == "" {
			bad(key+".path", "is required")
		}
		if p.SHA256 != "" && !isHex64(p.SHA256) {
			bad(key+".sha256", "must be 64 hex characters, got %d characters", len(p.SHA256))
		}
		if p.Deadline <= 0 {
			bad(key+".deadline", "must be positive, got %s", p.Deadline)
		}
		if p.MemoryLimit < 64<<10 || p.MemoryLimit > 4<<30 {
			bad(key+".memory_limit", "must be between 64KiB and 4GiB, got %d bytes", uint64(p.MemoryLimit))
		}
		if p.MaxEventsPerInstance < 0 {
			bad(key+".max_events_per_instance", "must not be negative")
		}
		for j, s := range p.Sinks {
			if _, ok := c.Sinks[s]; !ok {
				bad(fmt.Sprintf("%s.sinks[%d]", key, j), "names sink %q, which is not defined under sinks", s)
			}
		}
		total += p.Deadline
	}
	if budget := time.Duration(float64(c.Reclaim.MinIdle) * deadlineBudget); total > budget && c.Reclaim.MinIdle > 0 {
		bad("reclaim.min_idle", "is %s, but the plugins' deadlines add up to %s: keep them under half of min_idle (%s) so a slow but living consumer is not double-processed; raise min_idle or lower the deadlines", c.Reclaim.MinIdle, total, budget)
	}
	switch c.Log.Format {
	case "json", "text", "auto":
	default:
		bad("log.format", "must be json, text or auto, got %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if a := c.Metrics.Address; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil {
			bad("metrics.address", "%q is not host:port (use %q to turn metrics off): %v", a, MetricsOff, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("metrics.address", "%q: port %q is not a number from 0 to 65535", a, port)
		}
	}
	return errs
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}
