// Package syslogserver starts a throwaway, real rsyslog (for tests, through
// internal/syslogtest, and for `auditproc bench`): Debian's rsyslogd with
// imtcp on a loopback port for plain TCP and, when asked, one for TLS
// (RFC 5425, gtls driver, a certificate made at start). Every message it
// receives is parsed by rsyslog itself (its RFC 5424 parser and
// mmpstrucdata for the structured data) and written as one JSON line to a
// file read back with Messages.
//
// When rsyslogd (or, for TLS, its gtls driver) is missing, Bin and New
// return an error saying so (scripts/deps.sh installs rsyslog and
// rsyslog-gnutls).
package syslogserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/auditproc/auditproc/internal/certtest"
)

// Message is one message as rsyslog parsed it.
type Message struct {
	Pri      string `json:"pri"`
	Facility string `json:"facility"`
	Severity string `json:"severity"`
	Version  string `json:"version"`
	Time     string `json:"time"`
	// Received is when rsyslog received the message (its timegenerated,
	// RFC 3339 with fractional seconds).
	Received string `json:"received"`
	Host     string `json:"host"`
	App      string `json:"app"`
	ProcID   string `json:"procid"`
	MsgID    string `json:"msgid"`
	// SD is the structured data as mmpstrucdata parsed it: SD-ID, then
	// parameter name, then value.
	SD  map[string]map[string]string `json:"sd"`
	Msg string                       `json:"msg"`
}

// Options of New.
type Options struct {
	// Bin is the rsyslogd program; empty finds it (see Bin).
	Bin string
	// TLS adds the TLS input (RFC 5425); it needs rsyslog's gtls driver.
	TLS bool
}

// Server is a running rsyslogd.
type Server struct {
	dir     string
	conf    string
	out     string
	pidFile string
	tcpPort int
	tlsPort int // 0 without TLS
	certs   certtest.Files
	cmd     *exec.Cmd
	done    chan struct{}
	output  lockedBuffer
}

// lockedBuffer is rsyslogd's stdout and stderr, written by exec's copying
// goroutine and read by Output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Find returns path when it is a file, or, when path is empty, the
// rsyslogd Bin finds.
func Find(path string) (string, error) {
	if path == "" {
		return Bin()
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return "", fmt.Errorf("syslogserver: rsyslogd is not installed at %s (scripts/deps.sh installs rsyslog)", path)
	}
	return path, nil
}

// Bin finds rsyslogd: on the PATH, then /usr/sbin and /sbin.
func Bin() (string, error) {
	p, err := exec.LookPath("rsyslogd")
	if err != nil {
		for _, c := range []string{"/usr/sbin/rsyslogd", "/sbin/rsyslogd"} {
			if _, e := os.Stat(c); e == nil {
				return c, nil
			}
		}
		return "", errors.New("syslogserver: rsyslogd is not installed (scripts/deps.sh installs rsyslog)")
	}
	return p, nil
}

// TLSInstalled reports whether rsyslog's TLS driver (gtls) is installed.
func TLSInstalled() bool {
	m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
	m2, _ := filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so")
	return len(m)+len(m2) > 0
}

// New starts rsyslogd with its files in a temporary directory and waits
// until it listens. The caller ends it with Close.
func New(opts Options) (*Server, error) {
	bin, err := Find(opts.Bin)
	if err != nil {
		return nil, err
	}
	if opts.TLS && !TLSInstalled() {
		return nil, errors.New("syslogserver: rsyslog's TLS driver is not installed (scripts/deps.sh installs rsyslog-gnutls)")
	}
	dir, err := os.MkdirTemp("", "syslogserver-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), out: filepath.Join(dir, "messages.jsonl"),
		pidFile: filepath.Join(dir, "rsyslogd.pid")}
	fail := func(err error) (*Server, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if s.tcpPort, err = freePort(); err != nil {
		return fail(err)
	}
	if opts.TLS {
		if s.certs, err = certtest.Write(dir); err != nil {
			return fail(err)
		}
		if s.tlsPort, err = freePort(); err != nil {
			return fail(err)
		}
	}
	if err := os.WriteFile(s.conf, []byte(s.config()), 0o644); err != nil {
		return fail(err)
	}
	if err := s.start(bin); err != nil {
		s.Stop()
		return fail(err)
	}
	return s, nil
}

func (s *Server) config() string {
	tls, tlsInput := "", ""
	if s.tlsPort != 0 {
		tls = fmt.Sprintf(`
       defaultNetstreamDriverCAFile=%q
       defaultNetstreamDriverCertFile=%q
       defaultNetstreamDriverKeyFile=%q`, s.certs.CA, s.certs.Cert, s.certs.Key)
		tlsInput = fmt.Sprintf(`input(type="imtcp" address="127.0.0.1" port="%d" ruleset="in"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
`, s.tlsPort)
	}
	return fmt.Sprintf(`
global(workDirectory=%[1]q%[2]s
       maxMessageSize="256k"
       parser.escapeControlCharactersOnReceive="off")
module(load="imtcp" maxSessions="100")
module(load="mmpstrucdata")
template(name="parsed" type="list") {
  constant(value="{\"pri\":\"")        property(name="pri")
  constant(value="\",\"facility\":\"") property(name="syslogfacility-text")
  constant(value="\",\"severity\":\"") property(name="syslogseverity-text")
  constant(value="\",\"version\":\"")  property(name="protocol-version")
  constant(value="\",\"time\":\"")     property(name="timereported" dateFormat="rfc3339")
  constant(value="\",\"received\":\"") property(name="timegenerated" dateFormat="rfc3339")
  constant(value="\",\"host\":\"")     property(name="hostname" format="json")
  constant(value="\",\"app\":\"")      property(name="app-name" format="json")
  constant(value="\",\"procid\":\"")   property(name="procid" format="json")
  constant(value="\",\"msgid\":\"")    property(name="msgid" format="json")
  constant(value="\",\"sd\":")         property(name="$!rfc5424-sd")
  constant(value=",\"msg\":\"")        property(name="msg" format="json")
  constant(value="\"}\n")
}
ruleset(name="in") {
  action(type="mmpstrucdata")
  action(type="omfile" file=%[3]q template="parsed" flushOnTXEnd="on" asyncWriting="off")
}
input(type="imtcp" address="127.0.0.1" port="%[4]d" ruleset="in")
%[5]s`, s.dir, tls, s.out, s.tcpPort, tlsInput)
}

func (s *Server) start(bin string) error {
	s.cmd = exec.Command(bin, "-n", "-f", s.conf, "-i", s.pidFile)
	s.cmd.Stdout, s.cmd.Stderr = &s.output, &s.output
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("syslogserver: start rsyslogd: %w", err)
	}
	s.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(30 * time.Second)
	ports := []int{s.tcpPort}
	if s.tlsPort != 0 {
		ports = append(ports, s.tlsPort)
	}
	for _, port := range ports {
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
			if err == nil {
				_ = c.Close()
				break
			}
			select {
			case <-s.done:
				return fmt.Errorf("syslogserver: rsyslogd exited at start:\n%s", s.output.String())
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("syslogserver: rsyslogd does not listen on %d: %v\n%s", port, err, s.output.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Stop stops rsyslogd (SIGTERM, it writes what it received), SIGKILL after
// 10 s.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Close stops rsyslogd and removes its directory.
func (s *Server) Close() {
	s.Stop()
	_ = os.RemoveAll(s.dir)
}

// Restart stops rsyslogd and starts it again on the same ports.
func (s *Server) Restart() error {
	s.Stop()
	_ = os.Remove(s.pidFile)
	return s.start(s.cmd.Path)
}

// Pid is rsyslogd's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Output is what rsyslogd wrote to its stdout and stderr.
func (s *Server) Output() string { return s.output.String() }

// TCPAddr is the plain TCP input.
func (s *Server) TCPAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort)) }

// TLSAddr is the TLS input (RFC 5425); empty when started without TLS.
func (s *Server) TLSAddr() string {
	if s.tlsPort == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort))
}

// CAFile is the authority that signed the server's certificate (empty
// without TLS).
func (s *Server) CAFile() string { return s.certs.CA }

// Truncate empties the file of received messages (between runs; rsyslog
// writes with O_APPEND, so it continues at the new end).
func (s *Server) Truncate() error {
	err := os.Truncate(s.out, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Count returns how many messages rsyslog wrote so far (lines of the file).
func (s *Server) Count() (int, error) {
	f, err := os.Open(s.out)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	buf := make([]byte, 256<<10)
	for {
		k, err := f.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Messages returns what rsyslog wrote so far, parsed.
func (s *Server) Messages() ([]Message, error) {
	f, err := os.Open(s.out)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Message
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("syslogserver: line %d of rsyslog's output: %w: %s", len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// WaitMessages waits until rsyslog wrote at least n messages or timeout
// passed, and returns what it wrote.
func (s *Server) WaitMessages(n int, timeout time.Duration) ([]Message, error) {
	deadline := time.Now().Add(timeout)
	for {
		m, err := s.Messages()
		if err != nil || len(m) >= n || time.Now().After(deadline) {
			return m, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("syslogserver: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
