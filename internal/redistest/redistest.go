package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Environment variables read by this package.
const (
	EnvBackend = "AUDITPROC_REDIS_BACKEND" // "process" or "container"
	EnvImage   = "AUDITPROC_REDIS_IMAGE"   // container image; default DefaultImage
	EnvNoSkip  = "AUDITPROC_NO_SKIP"       // "1": a missing backend fails instead of skipping
)

// DefaultImage is the image of the container backend when $AUDITPROC_REDIS_IMAGE
// is unset: built locally, without pulling, by scripts/redis-image.sh.
const DefaultImage = "auditproc/redis:7-local"

// InternalPort is the port Redis listens on inside a container.
const InternalPort = 6379

// StartTimeout bounds how long Start and Restart wait for the server to
// answer PING.
const StartTimeout = 30 * time.Second

// Backend selects how the server runs.
type Backend int

const (
	// Auto: $AUDITPROC_REDIS_BACKEND, else Process when redis-server is on
	// PATH, else Container when Docker answers.
	Auto Backend = iota
	// Process runs redis-server from PATH.
	Process
	// Container runs a Docker container.
	Container
)

func (b Backend) String() string {
	switch b {
	case Process:
		return "process"
	case Container:
		return "container"
	default:
		return "auto"
	}
}

// Option configures Start.
type Option func(*config)

type config struct {
	backend Backend
	fsync   string
	network string
	alias   string
	args    []string
	port    int        // process backend: this port instead of a free one
	ip      netip.Addr // container backend WithNetwork: its fixed address there
	// sentinel runs redis-server --sentinel with this monitor line
	// (process backend; the rest of the arguments do not apply).
	sentinel string
}

// WithBackend asks for a specific backend (a test that needs a container:
// new port after restart, Docker networks).
func WithBackend(b Backend) Option { return func(c *config) { c.backend = b } }

// WithAppendFsync sets appendfsync: "everysec" (default), "always" (every
// acknowledged write survives a Kill) or "no".
func WithAppendFsync(mode string) Option { return func(c *config) { c.fsync = mode } }

// WithNetwork attaches the container to the existing Docker network name with
// the DNS alias alias; InternalAddr then returns "alias:6379". It implies the
// Container backend.
func WithNetwork(name, alias string) Option {
	return func(c *config) { c.network, c.alias = name, alias }
}

// WithArgs appends extra redis-server arguments ("--maxmemory", "10mb", ...).
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is a running (or stopped) Redis server owned by one test (or by the
// test binary, for Shared). Its methods are safe for concurrent use.
type Server struct {
	backend Backend
	mu      sync.Mutex // serialises Stop/Kill/Restart
	impl    impl
}

// impl is what a backend provides.
type impl interface {
	start(ctx context.Context) error // (re)start and wait for PING
	stop(ctx context.Context) error  // graceful
	kill(ctx context.Context) error  // SIGKILL
	running() bool
	addr() string         // host:port from the test process; "" when unknown
	internalAddr() string // host:port for peers (containers on the network)
	logs() string         // server log, for failure reports
	close()               // kill and remove everything
}

// unavailableError: the backend cannot run on this machine (skip reason).
type unavailableError struct{ reason string }

func (e *unavailableError) Error() string { return e.reason }

// SkipOrFail skips the test with reason, or fails it when AUDITPROC_NO_SKIP=1
// (CI: nothing may be skipped silently).
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(EnvNoSkip) == "1" {
		t.Fatalf("%s (%s=1: failing instead of skipping)", reason, EnvNoSkip)
	}
	t.Skip(reason)
}

// Start starts a Redis server for t, waits until it answers PING and
// registers its removal in t.Cleanup (the server log is printed when t
// failed). It skips (or fails, see SkipOrFail) when the backend is not
// available.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return startAll(t, [][]Option{opts})[0]
}

// startAll is Start for several servers at once, started concurrently
// (a cluster's containers start in the time of one).
func startAll(t testing.TB, opts [][]Option) []*Server {
	t.Helper()
	cfgs := make([]config, len(opts))
	dirs := make([]string, len(opts))
	for i, o := range opts {
		cfg, err := newConfig(o)
		if err != nil {
			t.Fatal(err)
		}
		cfgs[i], dirs[i] = cfg, t.TempDir()
	}
	servers := make([]*Server, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i := range opts {
		wg.Go(func() { servers[i], errs[i] = launch(cfgs[i], dirs[i], t.Name()) })
	}
	wg.Wait()
	for _, s := range servers {
		if s == nil {
			continue
		}
		t.Cleanup(func() {
			if t.Failed() {
				if l := s.impl.logs(); l != "" {
					t.Logf("redistest: %s server log:\n%s", s.backend, l)
				}
			}
			s.impl.close()
		})
	}
	for _, err := range errs {
		if err == nil {
			continue
		}
		var ue *unavailableError
		if errors.As(err, &ue) {
			SkipOrFail(t, ue.reason)
		}
		t.Fatal(err)
	}
	return servers
}

func newConfig(opts []Option) (config, error) {
	cfg := config{fsync: "everysec"}
	for _, o := range opts {
		o(&cfg)
	}
	switch cfg.fsync {
	case "everysec", "always", "no":
	default:
		return cfg, fmt.Errorf("redistest: appendfsync %q: want everysec, always or no", cfg.fsync)
	}
	if cfg.network != "" {
		if cfg.backend == Process {
			return cfg, errors.New("redistest: WithNetwork needs the Container backend")
		}
		cfg.backend = Container
	}
	return cfg, nil
}

// chooseBackend resolves Auto.
func chooseBackend(b Backend) (Backend, error) {
	if b != Auto {
		return b, nil
	}
	switch env := strings.ToLower(strings.TrimSpace(os.Getenv(EnvBackend))); env {
	case "process":
		return Process, nil
	case "container":
		return Container, nil
	case "", "auto":
	default:
		return Auto, fmt.Errorf("redistest: %s=%q: want process or container", EnvBackend, env)
	}
	if _, err := redisServerPath(); err == nil {
		return Process, nil
	}
	if err := dockerAvailable(); err == nil {
		return Container, nil
	} else {
		return Auto, &unavailableError{fmt.Sprintf(
			"redistest: no Redis available: redis-server is not on PATH (run scripts/deps.sh) and Docker does not answer: %v", err)}
	}
}

// launch starts a server whose files live under dir (removed by the caller).
func launch(cfg config, dir, name string) (*Server, error) {
	b, err := chooseBackend(cfg.backend)
	if err != nil {
		return nil, err
	}
	var im impl
	switch b {
	case Process:
		im, err = newProcess(cfg, dir)
	case Container:
		im, err = newContainer(cfg, name)
	default:
		err = fmt.Errorf("redistest: unknown backend %d", b)
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout+30*time.Second)
	defer cancel()
	if err := im.start(ctx); err != nil {
		l := im.logs()
		im.close()
		if l != "" {
			err = fmt.Errorf("%w\nserver log:\n%s", err, l)
		}
		return nil, err
	}
	return &Server{backend: b, impl: im}, nil
}

// Backend reports the backend the server runs on (Process or Container).
func (s *Server) Backend() Backend { return s.backend }

// Addr returns host:port reachable from the test process. For the container
// backend it is resolved again after every restart (the mapped port changes).
// It is "" while a container is stopped.
func (s *Server) Addr() string { return s.impl.addr() }

// InternalAddr returns the address peers use: "alias:6379" for a container
// started WithNetwork, the container's own address otherwise; Addr for the
// process backend.
func (s *Server) InternalAddr() string { return s.impl.internalAddr() }

// URL returns "redis://host:port/0" for Addr.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Running reports whether the server was started and not stopped or killed
// through this Server since.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.impl.running()
}

// Options returns go-redis options for the server. Their Dialer resolves
// Addr at every dial, so a client reconnects to a restarted container on its
// new port.
func (s *Server) Options() *redis.Options {
	return &redis.Options{
		Addr: s.Addr(),
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			addr := s.Addr()
			if addr == "" {
				return nil, errors.New("redistest: server is stopped")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// Client returns a go-redis client for the server, closed in t's cleanup. It
// survives restarts (see Options).
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(s.Options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop shuts the server down gracefully (SIGTERM: Redis flushes its AOF).
// Stopping a stopped server is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.impl.running() {
		return nil
	}
	return s.impl.stop(ctx)
}

// Kill kills the server with SIGKILL: what reached the AOF survives (with
// appendfsync always: every acknowledged write). Killing a stopped server is
// a no-op.
func (s *Server) Kill(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.impl.running() {
		return nil
	}
	return s.impl.kill(ctx)
}

// Restart starts the server again with its data (same dir and port for the
// process backend, same container for the container backend), stopping it
// gracefully first when it runs, and waits until it answers PING.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.impl.running() {
		if err := s.impl.stop(ctx); err != nil {
			return err
		}
	}
	return s.impl.start(ctx)
}

// Logs returns the server's log so far.
func (s *Server) Logs() string { return s.impl.logs() }

// waitPing dials addr() until Redis answers +PONG (not -LOADING), the process
// dies (exited returns non-nil) or ctx / StartTimeout ends.
func waitPing(ctx context.Context, addr func() string, exited func() error) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	var last error
	for {
		if exited != nil {
			if err := exited(); err != nil {
				return fmt.Errorf("redistest: redis-server exited before answering PING: %v", err)
			}
		}
		a := addr()
		if a == "" {
			last = errors.New("no address yet")
		} else if last = ping(ctx, a); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: Redis at %s did not answer PING within %v: %v", a, StartTimeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func ping(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if n == 0 && err != nil {
		return err
	}
	reply := strings.TrimSpace(string(buf[:n]))
	// A server that wants a password (WithArgs("--requirepass", ...)) is up.
	if reply != "+PONG" && !strings.HasPrefix(reply, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// Disconnect cuts a container started WithNetwork off its network (docker
// network disconnect): redis-server keeps running with its connections
// open, but no packet reaches it or leaves it, through its published port
// neither (Addr is "" meanwhile). Connect ends the cut.
func (s *Server) Disconnect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.impl.(*containerServer)
	if !ok || !c.running() {
		return errors.New("redistest: Disconnect needs a running container (WithNetwork)")
	}
	return c.disconnect(ctx)
}

// Connect connects a disconnected container to its network again, with its
// alias and fixed address, and waits until it answers PING on its new
// published port.
func (s *Server) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.impl.(*containerServer)
	if !ok || !c.disconnected() {
		return errors.New("redistest: Connect needs a container cut off by Disconnect")
	}
	return c.connect(ctx)
}

// Reachable reports whether the server runs and is not cut off its network
// (Disconnect).
func (s *Server) Reachable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.impl.(*containerServer); ok && c.disconnected() {
		return false
	}
	return s.impl.running()
}

// Pause stops the server with SIGSTOP (process backend): connections stay
// open and the kernel still accepts new ones, but nothing is answered, as
// with a server stalled by a long fork or a frozen host. Resume continues
// it; a test that pauses must resume (Cleanup kills a paused server fine).
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.impl.(*process)
	if !ok {
		return fmt.Errorf("redistest: %v needs the process backend (WithBackend(Process))", sig)
	}
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || !p.running() {
		return errors.New("redistest: the server is not running")
	}
	return cmd.Process.Signal(sig)
}
