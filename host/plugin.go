package host

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
)

// Plugin is a loaded, compiled and checked plugin: one wazero runtime with
// its memory limit and deadline guard. It is safe for concurrent use; the
// instances it makes are not, and each Worker keeps its own.
type Plugin struct {
	spec   PluginSpec
	sha256 string
	logger *slog.Logger
	rt     wazero.Runtime
	comp   *compiledPlugin // closed with the plugin
	module wazero.CompiledModule
	guard  Guard
	modCfg wazero.ModuleConfig
	epoch  time.Time // deadlines are nanoseconds since epoch (monotonic)
	logs   *rateLimiter

	mu     sync.Mutex
	live   map[*instance]struct{} // instances the deadline ticker watches
	idle   []*instance            // healthy instances no worker holds
	closed bool
	stop   chan struct{} // closed by Close; ends the ticker

	created  atomic.Uint64
	restarts [numCauses]atomic.Uint64
}

// Cause says why an instance was discarded or recycled.
type Cause int

const (
	CauseTrap           Cause = iota // trapped, or a host function trapped it (bad pointer)
	CauseDeadline                    // stopped at its deadline
	CauseExit                        // called proc_exit
	CauseInvalidVerdict              // returned a value that is no verdict
	CauseGuestMemory                 // auditproc_alloc returned 0 or an out-of-range region
	CauseMaxEvents                   // recycled after PluginSpec.MaxEventsPerInstance events
	CauseMemoryGrowth                // recycled after its memory grew past PluginSpec.MaxMemoryGrowthBytes
	numCauses
)

var causeNames = [numCauses]string{"trap", "deadline", "exit", "invalid_verdict", "guest_memory", "max_events", "memory_growth"}

// String returns the cause's snake_case name, for a metric label.
func (c Cause) String() string {
	if c >= 0 && c < numCauses {
		return causeNames[c]
	}
	return "unknown"
}

// Stats are a plugin's counters, for metrics.
type Stats struct {
	Instantiations uint64           // instances created, including the one Load makes
	Live           int              // instances open now
	Restarts       map[Cause]uint64 // instances discarded or recycled, by cause
}

func newPlugin(spec PluginSpec, cfg Config, sum string, c *compiledPlugin) *Plugin {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	logger = logger.With("plugin", spec.Name)
	modCfg := wazero.NewModuleConfig().
		WithName(""). // many instances of one module in one runtime
		// _initialize is called by newInstance, which names it in errors and
		// refuses a module that exits in it (wazero takes proc_exit(0) there
		// for success).
		WithStartFunctions().
		// Real randomness: wazero's default is a fixed sequence, which would
		// give every instance the same "random" ids.
		WithRandSource(rand.Reader)
	if spec.AllowClock {
		// No real nanosleep even then: a sleeping guest could not be stopped.
		modCfg = modCfg.WithSysWalltime().WithSysNanotime()
	}
	return &Plugin{
		spec:   spec,
		sha256: sum,
		logger: logger,
		rt:     c.rt,
		comp:   c,
		module: c.module,
		guard:  c.guard,
		modCfg: modCfg,
		epoch:  time.Now(),
		logs:   newRateLimiter(spec.LogLinesPerSecond),
		live:   map[*instance]struct{}{},
		stop:   make(chan struct{}),
	}
}

// Name returns the plugin's name.
func (p *Plugin) Name() string { return p.spec.Name }

// Guard returns how the plugin's deadline is kept.
func (p *Plugin) Guard() Guard { return p.guard }

// SHA256 returns the hex SHA-256 of the plugin's module.
func (p *Plugin) SHA256() string { return p.sha256 }

// Stats returns the plugin's counters.
func (p *Plugin) Stats() Stats {
	s := Stats{Instantiations: p.created.Load(), Restarts: map[Cause]uint64{}}
	for c := range numCauses {
		if n := p.restarts[c].Load(); n > 0 {
			s.Restarts[c] = n
		}
	}
	p.mu.Lock()
	s.Live = len(p.live)
	p.mu.Unlock()
	return s
}

// Close stops the deadline ticker and closes the runtime with every instance
// (a call running on another goroutine fails with ErrClosed).
func (p *Plugin) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	for inst := range p.live {
		inst.cancel()
	}
	idle := p.idle
	p.live = nil
	p.idle = nil
	p.mu.Unlock()
	err := p.comp.close(ctx)
	// No call runs in an idle instance: its memory can go now. An instance a
	// worker holds is closed when the worker gives it back.
	for _, inst := range idle {
		inst.close(-1)
	}
	return err
}

func (p *Plugin) now() int64 { return int64(time.Since(p.epoch)) }

// start runs the deadline ticker, unless the plugin is trusted.
func (p *Plugin) start() {
	if p.spec.Trusted {
		return
	}
	go p.watch(tick(min(p.spec.Deadline, p.spec.InitDeadline)))
}

// watch stops every call that runs past its deadline, once per tick.
func (p *Plugin) watch(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			now := p.now()
			p.mu.Lock()
			for inst := range p.live {
				inst.expire(now)
			}
			p.mu.Unlock()
		}
	}
}

// getInstance returns an idle instance or makes a new one.
func (p *Plugin) getInstance(ctx context.Context) (*instance, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return inst, nil
	}
	p.mu.Unlock()
	return p.newInstance(ctx)
}

// putIdle keeps a healthy instance for the next worker.
func (p *Plugin) putIdle(inst *instance) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		inst.close(-1)
		return
	}
	p.idle = append(p.idle, inst)
	p.mu.Unlock()
}

func (p *Plugin) register(inst *instance) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.live[inst] = struct{}{}
	return true
}

func (p *Plugin) unregister(inst *instance) {
	p.mu.Lock()
	delete(p.live, inst)
	p.mu.Unlock()
}
