package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/auditproc/auditproc/abi"
)

// Defaults applied to a zero field of PluginSpec.
const (
	DefaultMemoryLimitBytes     = 64 << 20
	DefaultDeadline             = time.Second
	DefaultInitDeadline         = 5 * time.Second
	DefaultMaxEventsPerInstance = 100_000
	DefaultMaxMemoryGrowthBytes = 16 << 20
	DefaultLogLinesPerSecond    = 50
	DefaultMaxEventBytes        = abi.DefaultMaxEventBytes
	DefaultMaxEmits             = abi.DefaultMaxEmits
	DefaultMaxEmitBytes         = abi.DefaultMaxEmitBytes
)

// wasmPageSize is the size of a WebAssembly memory page.
const wasmPageSize = 64 << 10

// Config holds the settings shared by every plugin loaded with it.
type Config struct {
	// CacheDir is where compiled modules are cached between runs. Empty keeps
	// the cache in memory only (a module is then compiled once per Load).
	// Ignored when Cache is set, which has its own.
	CacheDir string
	// Cache, when set, is the compilation cache every plugin loaded with
	// this Config shares (one per pipeline: a module loaded twice is
	// compiled once).
	Cache *Cache
	// Logger receives plugin log lines (host function log, stdout, stderr)
	// and instance restarts. Nil discards them.
	Logger *slog.Logger
}

// PluginSpec describes one plugin of a pipeline, as plugins.yaml does.
type PluginSpec struct {
	// Name identifies the plugin in results, errors, logs and metrics. Required.
	Name string
	// Path is the .wasm file to load. Exactly one of Path and Wasm is set.
	Path string
	// Wasm is the module's bytes, for a module that is not in a file.
	Wasm []byte
	// SHA256 pins the module's digest (hex, optionally prefixed "sha256:").
	// Empty loads any module.
	SHA256 string
	// Config is the JSON text handed to auditproc_init; "{}" when empty.
	Config []byte
	// MemoryLimitBytes caps the guest's linear memory, rounded up to 64 KiB
	// pages. Default DefaultMemoryLimitBytes (64 MiB).
	MemoryLimitBytes uint64
	// Deadline bounds one event's call into the plugin. Default
	// DefaultDeadline (1s: generous, since a loaded machine stalls a call for
	// tens of milliseconds now and then). Not enforced when Trusted.
	Deadline time.Duration
	// InitDeadline bounds instantiation (_initialize and auditproc_init).
	// Default DefaultInitDeadline (5s). Not enforced when Trusted.
	InitDeadline time.Duration
	// Trusted turns the deadline guard off: the module runs as written,
	// without the meter's counter (a few per cent faster for loop-heavy
	// guests; see the package doc), and a plugin that never returns blocks
	// its worker forever. Only for vetted plugins.
	Trusted bool
	// AllowClock gives the guest the real wall and monotonic clocks and real
	// sleeps. Without it WASI clocks are wazero's deterministic fakes.
	AllowClock bool
	// Sinks lists the sinks this plugin may emit to.
	Sinks []string
	// MaxEventsPerInstance recycles an instance after that many events.
	// Default DefaultMaxEventsPerInstance (100000).
	MaxEventsPerInstance int
	// MaxMemoryGrowthBytes recycles an instance whose memory grew by more
	// than this since it was created (Wasm memory never shrinks). Default
	// DefaultMaxMemoryGrowthBytes (16 MiB).
	MaxMemoryGrowthBytes uint64
	// MaxEventBytes bounds the event handed in and set_event/event_set
	// results. Default DefaultMaxEventBytes (1 MiB).
	MaxEventBytes int
	// MaxEmits bounds the emits of one event. Default DefaultMaxEmits (16).
	MaxEmits int
	// MaxEmitBytes bounds one emitted event. Default DefaultMaxEmitBytes (256 KiB).
	MaxEmitBytes int
	// LogLinesPerSecond rate-limits the plugin's log lines (log, stdout and
	// stderr together, all instances); excess lines are counted and dropped.
	// Default DefaultLogLinesPerSecond (50).
	LogLinesPerSecond int
}

// withDefaults returns s with every zero field set to its default.
func (s PluginSpec) withDefaults() PluginSpec {
	if s.MemoryLimitBytes == 0 {
		s.MemoryLimitBytes = DefaultMemoryLimitBytes
	}
	if s.Deadline == 0 {
		s.Deadline = DefaultDeadline
	}
	if s.InitDeadline == 0 {
		s.InitDeadline = DefaultInitDeadline
	}
	if s.MaxEventsPerInstance == 0 {
		s.MaxEventsPerInstance = DefaultMaxEventsPerInstance
	}
	if s.MaxMemoryGrowthBytes == 0 {
		s.MaxMemoryGrowthBytes = DefaultMaxMemoryGrowthBytes
	}
	if s.MaxEventBytes == 0 {
		s.MaxEventBytes = DefaultMaxEventBytes
	}
	if s.MaxEmits == 0 {
		s.MaxEmits = DefaultMaxEmits
	}
	if s.MaxEmitBytes == 0 {
		s.MaxEmitBytes = DefaultMaxEmitBytes
	}
	if s.LogLinesPerSecond == 0 {
		s.LogLinesPerSecond = DefaultLogLinesPerSecond
	}
	if len(s.Config) == 0 {
		s.Config = []byte("{}")
	}
	return s
}

// Validate reports every problem of a spec whose defaults are applied.
func (s PluginSpec) Validate() error {
	var errs []error
	if strings.TrimSpace(s.Name) == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if (s.Path == "") == (s.Wasm == nil) {
		errs = append(errs, errors.New("set exactly one of path and wasm"))
	}
	if s.SHA256 != "" {
		if _, err := parseDigest(s.SHA256); err != nil {
			errs = append(errs, err)
		}
	}
	if s.MemoryLimitBytes > 65536*wasmPageSize {
		errs = append(errs, fmt.Errorf("memory limit %d bytes is above the 4 GiB a wasm32 memory can hold", s.MemoryLimitBytes))
	}
	if s.Deadline < 0 || s.InitDeadline < 0 {
		errs = append(errs, errors.New("deadlines must be positive"))
	}
	if s.MaxEventsPerInstance < 0 || s.MaxEventBytes < 0 || s.MaxEmits < 0 || s.MaxEmitBytes < 0 || s.LogLinesPerSecond < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	return errors.Join(errs...)
}

func (s PluginSpec) memoryLimitPages() uint32 {
	return uint32((s.MemoryLimitBytes + wasmPageSize - 1) / wasmPageSize)
}

// tick is how often the deadline ticker looks at running calls: a runaway
// guest is stopped within its deadline plus one tick.
func tick(deadline time.Duration) time.Duration {
	return min(max(deadline/8, time.Millisecond), 25*time.Millisecond)
}

// Cache is a compilation cache that plugins share (Config.Cache): wazero's
// compiled native code, in memory and, with a directory, on disk. Every
// plugin loaded with it keeps it open until the plugin is closed, so its
// creator may Close it as soon as the plugins are loaded: the last of them
// to close releases it.
type Cache struct {
	c   wazero.CompilationCache
	dir string

	mu          sync.Mutex
	refs        int  // the creator's reference and one per plugin
	creatorGone bool // Close was called
}

// NewCache returns a compilation cache kept in dir, or in memory only when
// dir is empty.
func NewCache(dir string) (*Cache, error) {
	c, err := newCompilationCache(dir)
	if err != nil {
		return nil, err
	}
	return &Cache{c: c, dir: dir, refs: 1}, nil
}

// Close gives up the creator's reference; the cache is released once every
// plugin that uses it is closed too. Calling it more than once is a no-op.
func (c *Cache) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.refs > 0 && !c.creatorGone {
		c.creatorGone = true
		c.mu.Unlock()
		return c.release(ctx)
	}
	c.mu.Unlock()
	return nil
}

// acquire takes a plugin's reference; false when the cache is released.
func (c *Cache) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refs == 0 {
		return false
	}
	c.refs++
	return true
}

// release gives up one reference and releases the cache with the last.
func (c *Cache) release(ctx context.Context) error {
	c.mu.Lock()
	c.refs--
	last := c.refs == 0
	c.mu.Unlock()
	if last {
		return c.c.Close(ctx)
	}
	return nil
}

// dir is where instrumented modules are kept: the shared cache's
// directory, or CacheDir.
func (cfg Config) dir() string {
	if cfg.Cache != nil {
		return cfg.Cache.dir
	}
	return cfg.CacheDir
}

func newCompilationCache(dir string) (wazero.CompilationCache, error) {
	if dir == "" {
		return wazero.NewCompilationCache(), nil
	}
	c, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil, fmt.Errorf("compilation cache: %w", err)
	}
	return c, nil
}
