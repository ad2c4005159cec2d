package redistest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// LabelTest is the label every container this package starts carries, with
// the name of the test that started it: `docker ps --filter label=...` finds
// leftovers of a crashed test binary.
const LabelTest = "org.auditproc.redistest"

const (
	envRyukDisabled = "TESTCONTAINERS_RYUK_DISABLED"
	envHostOverride = "TESTCONTAINERS_HOST_OVERRIDE"
)

// init configures testcontainers-go before anything in the test binary uses
// it (it reads its environment once): no Ryuk reaper (its image cannot be
// pulled without a registry; every container is removed in t.Cleanup
// instead), and mapped ports reached on loopback rather than on the gateway
// testcontainers infers inside a container. Values already set win, and a
// remote Docker host (DOCKER_HOST=tcp://...) keeps testcontainers' own choice.
func init() {
	setDefaultEnv(envRyukDisabled, "true")
	if h := os.Getenv("DOCKER_HOST"); h == "" || strings.HasPrefix(h, "unix://") {
		setDefaultEnv(envHostOverride, "127.0.0.1")
	}
}

func setDefaultEnv(key, value string) {
	if _, ok := os.LookupEnv(key); !ok {
		_ = os.Setenv(key, value)
	}
}

var docker struct {
	once sync.Once
	err  error
}

// dockerAvailable reports (once per test binary) whether a Docker engine answers.
func dockerAvailable() error {
	docker.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cli, err := testcontainers.NewDockerClientWithOpts(ctx)
		if err == nil {
			_, err = cli.Ping(ctx, client.PingOptions{})
			_ = cli.Close()
		}
		if err != nil {
			docker.err = &unavailableError{fmt.Sprintf("redistest: no Docker engine answers (%v)", err)}
		}
	})
	return docker.err
}

// containerServer is the Container backend: one container, created on the
// first start and started again (same writable layer, so same /data and AOF)
// on Restart.
type containerServer struct {
	cfg   config
	test  string
	image string

	ctr *testcontainers.DockerContainer // nil before the first start

	mu   sync.Mutex // guards addr, up, cut; addr is read by every client dial
	host string
	port string // mapped host port; "" while stopped or disconnected
	up   bool
	cut  bool // disconnected from its network (Disconnect)
}

func newContainer(cfg config, test string) (impl, error) {
	if err := dockerAvailable(); err != nil {
		return nil, err
	}
	image := os.Getenv(EnvImage)
	if image == "" {
		image = DefaultImage
	}
	return &containerServer{cfg: cfg, test: test, image: image}, nil
}

func (c *containerServer) cmd() []string {
	a := []string{"redis-server",
		"--appendonly", "yes",
		"--appendfsync", c.cfg.fsync,
		"--save", "",
		// The official image turns protected mode off at build time; say it
		// for any image, since clients come through a port mapping or network.
		"--protected-mode", "no",
	}
	return append(a, c.cfg.args...)
}

func (c *containerServer) start(ctx context.Context) error {
	if c.ctr == nil {
		if err := c.create(ctx); err != nil {
			return err
		}
	} else if err := c.ctr.Start(ctx); err != nil {
		return fmt.Errorf("redistest: start container %s: %w", shortID(c.ctr.GetContainerID()), err)
	}
	c.mu.Lock()
	c.up = true
	c.mu.Unlock()
	// A stopped and started container gets a new host port: resolve it again.
	if err := c.resolve(ctx); err != nil {
		return err
	}
	return waitPing(ctx, c.addr, func() error { return c.exited(ctx) })
}

func (c *containerServer) create(ctx context.Context) error {
	if err := ensureImage(ctx, c.image); err != nil {
		return err
	}
	opts := []testcontainers.ContainerCustomizer{
		testcontainers.WithCmd(c.cmd()...),
		testcontainers.WithExposedPorts(fmt.Sprintf("%d/tcp", InternalPort)),
		testcontainers.WithLabels(map[string]string{LabelTest: c.test}),
	}
	if ip, err := netip.ParseAddr(os.Getenv(envHostOverride)); err == nil && ip.IsLoopback() {
		// Reached only from this machine: do not publish Redis on every interface.
		opts = append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort(fmt.Sprintf("%d/tcp", InternalPort)): {{HostIP: ip}},
			}
		}))
	}
	if c.cfg.network != "" {
		opts = append(opts, tcnetwork.WithNetworkName([]string{c.cfg.alias}, c.cfg.network))
		if c.cfg.ip.IsValid() {
			opts = append(opts, testcontainers.WithEndpointSettingsModifier(func(s map[string]*network.EndpointSettings) {
				if es := s[c.cfg.network]; es != nil {
					es.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: c.cfg.ip}
				}
			}))
		}
	}
	ctr, err := testcontainers.Run(ctx, c.image, opts...)
	if ctr != nil {
		c.ctr = ctr // removed by close even when it failed to start
	}
	if err != nil {
		if c.image != DefaultImage {
			// Missing locally, the image was pulled: say how to avoid the registry.
			return fmt.Errorf("redistest: run container from %s (%s): %w; without a registry, unset %s to use %s, built locally by scripts/redis-image.sh",
				c.image, EnvImage, err, EnvImage, DefaultImage)
		}
		return fmt.Errorf("redistest: run container from %s: %w", c.image, err)
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return fmt.Errorf("redistest: docker host: %w", err)
	}
	c.mu.Lock()
	c.host = host
	c.mu.Unlock()
	return nil
}

// resolve reads the container's current host port (published a moment after
// the start on some engines, hence the retries).
func (c *containerServer) resolve(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	want := fmt.Sprintf("%d/tcp", InternalPort)
	for {
		p, err := c.ctr.MappedPort(ctx, want)
		if err == nil && p.Num() != 0 {
			c.mu.Lock()
			c.port = p.Port()
			c.mu.Unlock()
			return nil
		}
		if err := c.exited(ctx); err != nil {
			return fmt.Errorf("redistest: container %s: %w", shortID(c.ctr.GetContainerID()), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: container %s: no host port for %s: %v", shortID(c.ctr.GetContainerID()), want, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exited returns non-nil when the container is no longer running.
func (c *containerServer) exited(ctx context.Context) error {
	st, err := c.ctr.State(ctx)
	if err != nil {
		return nil // unknown: let the PING deadline decide
	}
	if !st.Running {
		return fmt.Errorf("redis-server exited (status %s, exit code %d)", st.Status, st.ExitCode)
	}
	return nil
}

func (c *containerServer) markDown() {
	c.mu.Lock()
	c.up, c.port, c.cut = false, "", false
	c.mu.Unlock()
}

// disconnect is docker network disconnect: the container keeps running but
// reaches nothing and nothing reaches it, its published port included.
func (c *containerServer) disconnect(ctx context.Context) error {
	if c.cfg.network == "" {
		return errors.New("redistest: Disconnect needs a server started WithNetwork")
	}
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("redistest: docker client: %w", err)
	}
	defer cli.Close()
	id := c.ctr.GetContainerID()
	if _, err := cli.NetworkDisconnect(ctx, c.cfg.network, client.NetworkDisconnectOptions{Container: id, Force: true}); err != nil {
		return fmt.Errorf("redistest: disconnect container %s from %s: %w", shortID(id), c.cfg.network, err)
	}
	c.mu.Lock()
	c.cut, c.port = true, ""
	c.mu.Unlock()
	return nil
}

// connect is docker network connect, with the alias and the fixed address
// the container had; the published port changes, and is resolved again.
func (c *containerServer) connect(ctx context.Context) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("redistest: docker client: %w", err)
	}
	defer cli.Close()
	id := c.ctr.GetContainerID()
	es := &network.EndpointSettings{Aliases: []string{c.cfg.alias}}
	if c.cfg.ip.IsValid() {
		es.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: c.cfg.ip}
	}
	if _, err := cli.NetworkConnect(ctx, c.cfg.network, client.NetworkConnectOptions{Container: id, EndpointConfig: es}); err != nil {
		return fmt.Errorf("redistest: connect container %s to %s: %w", shortID(id), c.cfg.network, err)
	}
	if err := c.resolve(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.cut = false
	c.mu.Unlock()
	return waitPing(ctx, c.addr, func() error { return c.exited(ctx) })
}

func (c *containerServer) disconnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

// stop is docker stop: SIGTERM, Redis flushes its AOF and exits.
func (c *containerServer) stop(ctx context.Context) error {
	timeout := stopTimeout
	if err := c.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("redistest: stop container %s: %w", shortID(c.ctr.GetContainerID()), err)
	}
	c.markDown()
	return nil
}

// kill is docker kill (SIGKILL to redis-server, PID 1), then waits for the
// engine to see the container exit.
func (c *containerServer) kill(ctx context.Context) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("redistest: docker client: %w", err)
	}
	defer cli.Close()
	id := c.ctr.GetContainerID()
	if _, err := cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("redistest: kill container %s: %w", shortID(id), err)
	}
	for c.exited(ctx) == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: container %s still running after SIGKILL: %w", shortID(id), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.markDown()
	return nil
}

func (c *containerServer) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

func (c *containerServer) addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.port == "" {
		return ""
	}
	return net.JoinHostPort(c.host, c.port)
}

func (c *containerServer) internalAddr() string {
	port := fmt.Sprint(InternalPort)
	if c.cfg.alias != "" {
		return net.JoinHostPort(c.cfg.alias, port)
	}
	if c.ctr == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ip, err := c.ctr.ContainerIP(ctx)
	if err != nil || ip == "" {
		return ""
	}
	return net.JoinHostPort(ip, port)
}

func (c *containerServer) logs() string {
	if c.ctr == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := c.ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(container logs: %v)", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// close removes the container (and its anonymous volumes, such as the
// official image's /data). Its data is of no use any more: no graceful stop.
func (c *containerServer) close() {
	if c.ctr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = c.ctr.Terminate(ctx, testcontainers.StopTimeout(0))
	c.markDown()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

var imageBuild sync.Mutex

// ensureImage makes sure image is present locally. DefaultImage is built by
// scripts/redis-image.sh when missing (nothing is pulled); any other image
// missing locally is left to testcontainers, which pulls it.
func ensureImage(ctx context.Context, image string) error {
	if image != DefaultImage {
		return nil
	}
	imageBuild.Lock()
	defer imageBuild.Unlock()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("redistest: docker client: %w", err)
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, image); err == nil {
		return nil
	}
	script, err := findScript("scripts/redis-image.sh")
	if err != nil {
		return fmt.Errorf("redistest: image %s is missing and %w: run `make redis-image` or set %s", image, err, EnvImage)
	}
	out, err := exec.CommandContext(ctx, script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("redistest: build image %s with %s: %w\n%s", image, script, err, out)
	}
	return nil
}

// findScript looks for rel in the working directory and its parents (go test
// runs in the package directory, inside the repository).
func findScript(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New(rel + " is not found above the working directory")
		}
		dir = parent
	}
}
