package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds a graceful stop when ctx has no earlier deadline; after
// it the server is killed.
const stopTimeout = 30 * time.Second

func redisServerPath() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", &unavailableError{"redistest: redis-server is not on PATH (scripts/deps.sh installs it)"}
	}
	return p, nil
}

// process is the Process backend: redis-server on 127.0.0.1:port, files in dir.
type process struct {
	bin     string
	cfg     config
	dir     string
	logPath string // --logfile
	outPath string // stdout+stderr (what is printed before the logfile opens)
	port    int    // 0 until the first successful start; kept afterwards

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd exited
	waitErr error         // cmd.Wait's result, valid after done
}

func newProcess(cfg config, dir string) (*process, error) {
	bin, err := redisServerPath()
	if err != nil {
		return nil, err
	}
	return &process{bin: bin, cfg: cfg, dir: dir, port: cfg.port, logPath: filepath.Join(dir, "redis.log"),
		outPath: filepath.Join(dir, "redis.stdout")}, nil
}

func (p *process) args() []string {
	if p.cfg.sentinel != "" {
		conf := filepath.Join(p.dir, "sentinel.conf")
		if _, err := os.Stat(conf); err != nil {
			// Sentinel rewrites its file; write it only once, so a restart
			// keeps what it learnt.
			_ = os.WriteFile(conf, []byte(p.cfg.sentinel), 0o600)
		}
		return append([]string{conf, "--sentinel",
			"--port", strconv.Itoa(p.port),
			"--bind", "127.0.0.1",
			"--dir", p.dir,
			"--logfile", p.logPath,
			"--daemonize", "no",
		}, p.cfg.args...)
	}
	a := []string{
		"--port", strconv.Itoa(p.port),
		"--bind", "127.0.0.1",
		"--dir", p.dir,
		"--logfile", p.logPath,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", p.cfg.fsync,
	}
	return append(a, p.cfg.args...)
}

func (p *process) start(ctx context.Context) error {
	if p.port != 0 {
		return p.startOnce(ctx)
	}
	// First start: a free port can be taken by someone else between our probe
	// and redis-server's bind; try a few.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if p.port, err = freePort(); err != nil {
			return err
		}
		if err = p.startOnce(ctx); err == nil {
			return nil
		}
		if !strings.Contains(p.logs(), "Address already in use") {
			break
		}
	}
	p.port = 0
	return err
}

func (p *process) startOnce(ctx context.Context) error {
	// A file, not a pipe: Wait must not hang on a forked AOF-rewrite child
	// that still holds the pipe after a SIGKILL of its parent.
	out, err := os.OpenFile(p.outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(p.bin, p.args()...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.waitErr = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	exited := func() error {
		select {
		case <-done:
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.waitErr == nil {
				return errors.New("exit status 0")
			}
			return p.waitErr
		default:
			return nil
		}
	}
	if err := waitPing(ctx, p.addr, exited); err != nil {
		_ = p.kill(context.Background())
		return err
	}
	return nil
}

func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *process) signalAndWait(ctx context.Context, sig syscall.Signal) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("redistest: signal %v to redis-server: %w", sig, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stopTimeout)
		defer cancel()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("redistest: redis-server did not exit after %v: %w (killed)", sig, ctx.Err())
	}
}

func (p *process) stop(ctx context.Context) error { return p.signalAndWait(ctx, syscall.SIGTERM) }

func (p *process) kill(ctx context.Context) error { return p.signalAndWait(ctx, syscall.SIGKILL) }

func (p *process) addr() string {
	if p.port == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
}

func (p *process) internalAddr() string { return p.addr() }

func (p *process) logs() string {
	var b strings.Builder
	if data, err := os.ReadFile(p.logPath); err == nil {
		b.Write(data)
	}
	if data, err := os.ReadFile(p.outPath); err == nil && len(bytes.TrimSpace(data)) > 0 {
		b.WriteString("--- redis-server stdout/stderr ---\n")
		b.Write(data)
	}
	return b.String()
}

func (p *process) close() { _ = p.kill(context.Background()) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
