// Package pgserver starts a throwaway, real PostgreSQL server (for tests,
// through internal/pgtest, and for `auditproc bench`): Debian's postgresql
// package (initdb and pg_ctl from
// /usr/lib/postgresql/<version>/bin, or $AUDITPROC_PG_BIN), a cluster in a
// temporary directory, listening on 127.0.0.1 on a free port with TLS (a
// certificate made at start) and password authentication (scram-sha-256,
// a password made at start). As root the server runs as the postgres
// user, since PostgreSQL refuses to run as root. fsync is off (a killed
// process loses nothing the kernel holds; only a machine crash would) but
// commits are synchronous, so Kill loses no committed transaction.
//
// The caller can stop, kill and restart the server; the port and the data
// stay until Remove. When PostgreSQL is not installed, Bin and New return an
// error saying so (scripts/deps.sh installs it).
package pgserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/auditproc/auditproc/internal/certtest"
)

// EnvBin names a directory holding initdb and pg_ctl, overriding the search.
const EnvBin = "AUDITPROC_PG_BIN"

// User is the database superuser the server is created with.
const User = "auditproc"

// Server is a running PostgreSQL cluster.
type Server struct {
	bin      string
	dir      string // owned by the server's user
	data     string
	logFile  string
	port     int
	password string
	certs    certtest.Files
	cred     *syscall.Credential // nil when not root
}

// Find returns dir when it holds pg_ctl and initdb, or, when dir is empty,
// the directory Bin finds.
func Find(dir string) (string, error) {
	if dir == "" {
		return Bin()
	}
	for _, prog := range []string{"pg_ctl", "initdb"} {
		if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
			return "", fmt.Errorf("pgserver: PostgreSQL is not installed in %s (no %s; scripts/deps.sh installs postgresql)", dir, prog)
		}
	}
	return dir, nil
}

// Bin finds the directory of initdb and pg_ctl: $AUDITPROC_PG_BIN, the
// PATH, then the newest /usr/lib/postgresql/<version>/bin.
func Bin() (string, error) {
	if d := os.Getenv(EnvBin); d != "" {
		return Find(d)
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("pgserver: PostgreSQL is not installed (initdb/pg_ctl not found; scripts/deps.sh installs postgresql)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// New creates a cluster in a temporary directory and starts it, with the
// programs of binDir (empty: the directory Bin finds). The caller ends it
// with Close.
func New(binDir string) (*Server, error) {
	bin, err := Find(binDir)
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if err := s.create(); err != nil {
		s.Remove()
		return nil, err
	}
	if err := s.Start(); err != nil {
		err = fmt.Errorf("%w\n--- postgresql log ---\n%s", err, s.Logs())
		_ = s.Kill()
		s.Remove()
		return nil, err
	}
	return s, nil
}

// Close kills the server and removes its directory.
func (s *Server) Close() error {
	err := s.Kill()
	s.Remove()
	return err
}

func (s *Server) create() error {
	dir, err := os.MkdirTemp("", "pgserver-")
	if err != nil {
		return err
	}
	s.dir = dir
	s.data = filepath.Join(dir, "data")
	s.logFile = filepath.Join(dir, "postgresql.log")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgserver: running as root needs the postgres user (from the postgresql package): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if s.certs, err = certtest.Write(dir); err != nil {
		return err
	}
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	s.password = hex.EncodeToString(pw[:])
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(s.password+"\n"), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, int(s.cred.Uid), int(s.cred.Gid))
		}); err != nil {
			return err
		}
	}
	if s.port, err = freePort(); err != nil {
		return err
	}
	out, err := s.run("initdb", "-D", s.data, "-U", User, "--pwfile", pwFile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	_ = os.Remove(pwFile)
	if err != nil {
		return fmt.Errorf("pgserver: initdb: %w\n%s", err, out)
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
ssl = on
ssl_cert_file = '%s'
ssl_key_file = '%s'
fsync = off
full_page_writes = off
max_connections = 50
shared_buffers = 16MB
`, s.port, dir, s.certs.Cert, s.certs.Key)
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// run runs a PostgreSQL program as the server's user.
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd.CombinedOutput()
}

// Start (re)starts the server on its port and waits until it accepts
// connections.
func (s *Server) Start() error {
	out, err := s.run("pg_ctl", "start", "-D", s.data, "-l", s.logFile, "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("pgserver: pg_ctl start: %w\n%s", err, out)
	}
	return nil
}

// Stop shuts the server down (fast mode: sessions are ended, the data is
// kept consistent).
func (s *Server) Stop() error {
	out, err := s.run("pg_ctl", "stop", "-D", s.data, "-m", "fast", "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("pgserver: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Kill stops the server at once (immediate mode: no checkpoint, recovery at
// the next start), like a crash.
func (s *Server) Kill() error {
	if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err != nil {
		return nil
	}
	out, err := s.run("pg_ctl", "stop", "-D", s.data, "-m", "immediate", "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("pgserver: pg_ctl stop -m immediate: %w\n%s", err, out)
	}
	return nil
}

// Remove deletes the server's directory (its data, log and certificates);
// the server must be stopped.
func (s *Server) Remove() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// Pid is the postmaster's process id (from postmaster.pid), while the
// server runs.
func (s *Server) Pid() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// Addr is 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Password is the superuser's password, made at start.
func (s *Server) Password() string { return s.password }

// CAFile is the PEM file of the authority that signed the server's
// certificate (for sslrootcert).
func (s *Server) CAFile() string { return s.certs.CA }

// URL is a connection URL for database db without the password, verifying
// the server's certificate (sslmode=verify-full).
func (s *Server) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(User), Host: s.Addr(), Path: "/" + db}
	q := url.Values{}
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", s.certs.CA)
	u.RawQuery = q.Encode()
	return u.String()
}

// DSN is a connection URL for database postgres including the password,
// for the caller's own queries (no TLS).
func (s *Server) DSN() string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(User, s.password), Host: s.Addr(), Path: "/postgres"}
	u.RawQuery = "sslmode=disable"
	return u.String()
}

// Logs returns the server log.
func (s *Server) Logs() string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

// WaitReady waits until the server accepts TCP connections or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error {
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
