// Package syslogtest starts a throwaway, real rsyslog for a test: Debian's
// rsyslogd with imtcp on two loopback ports, one plain TCP and one TLS
// (RFC 5425, gtls driver, a certificate made at test time). Every message it
// receives is parsed by rsyslog itself (its RFC 5424 parser and
// mmpstrucdata for the structured data) and written as one JSON line to a
// file the test reads back with Messages.
//
// When rsyslogd or its TLS driver is missing the test skips, or fails under
// AUDITPROC_NO_SKIP=1 (scripts/deps.sh installs rsyslog and rsyslog-gnutls).
package syslogtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/auditproc/auditproc/internal/certtest"
	"github.com/auditproc/auditproc/internal/redistest"
)

// Message is one message as rsyslog parsed it.
type Message struct {
	Pri      string `json:"pri"`
	Facility string `json:"facility"`
	Severity string `json:"severity"`
	Version  string `json:"version"`
	Time     string `json:"time"`
	Host     string `json:"host"`
	App      string `json:"app"`
	ProcID   string `json:"procid"`
	MsgID    string `json:"msgid"`
	// SD is the structured data as mmpstrucdata parsed it: SD-ID, then
	// parameter name, then value.
	SD  map[string]map[string]string `json:"sd"`
	Msg string                       `json:"msg"`
}

// Server is a running rsyslogd.
type Server struct {
	t        testing.TB
	dir      string
	conf     string
	out      string
	pidFile  string
	tcpPort  int
	tlsPort  int
	certs    certtest.Files
	cmd      *exec.Cmd
	done     chan struct{}
	stdouErr bytes.Buffer
}

func rsyslogd() (string, error) {
	p, err := exec.LookPath("rsyslogd")
	if err != nil {
		for _, c := range []string{"/usr/sbin/rsyslogd", "/sbin/rsyslogd"} {
			if _, e := os.Stat(c); e == nil {
				return c, nil
			}
		}
		return "", errors.New("syslogtest: rsyslogd is not installed (scripts/deps.sh installs rsyslog)")
	}
	return p, nil
}

func gtlsInstalled() bool {
	m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
	m2, _ := filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so")
	return len(m)+len(m2) > 0
}

// Start starts rsyslogd and registers its end in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := rsyslogd()
	if err != nil {
		redistest.SkipOrFail(t, err.Error())
	}
	if !gtlsInstalled() {
		redistest.SkipOrFail(t, "syslogtest: rsyslog's TLS driver is not installed (scripts/deps.sh installs rsyslog-gnutls)")
	}
	dir := t.TempDir()
	s := &Server{t: t, dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), out: filepath.Join(dir, "messages.jsonl"),
		pidFile: filepath.Join(dir, "rsyslogd.pid")}
	if s.certs, err = certtest.Write(dir); err != nil {
		t.Fatal(err)
	}
	if s.tcpPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if s.tlsPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.conf, []byte(s.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("--- rsyslogd output ---\n%s", s.stdouErr.String())
		}
	})
	if err := s.start(bin); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) config() string {
	return fmt.Sprintf(`
global(workDirectory=%[1]q
       defaultNetstreamDriverCAFile=%[2]q
       defaultNetstreamDriverCertFile=%[3]q
       defaultNetstreamDriverKeyFile=%[4]q
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
  action(type="omfile" file=%[5]q template="parsed" flushOnTXEnd="on" asyncWriting="off")
}
input(type="imtcp" address="127.0.0.1" port="%[6]d" ruleset="in")
input(type="imtcp" address="127.0.0.1" port="%[7]d" ruleset="in"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
`, s.dir, s.certs.CA, s.certs.Cert, s.certs.Key, s.out, s.tcpPort, s.tlsPort)
}

func (s *Server) start(bin string) error {
	s.cmd = exec.Command(bin, "-n", "-f", s.conf, "-i", s.pidFile)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdouErr, &s.stdouErr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("syslogtest: start rsyslogd: %w", err)
	}
	s.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range []int{s.tcpPort, s.tlsPort} {
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
			if err == nil {
				_ = c.Close()
				break
			}
			select {
			case <-s.done:
				return fmt.Errorf("syslogtest: rsyslogd exited at start:\n%s", s.stdouErr.String())
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("syslogtest: rsyslogd does not listen on %d: %v\n%s", port, err, s.stdouErr.String())
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

// Restart stops rsyslogd and starts it again on the same ports.
func (s *Server) Restart() error {
	s.Stop()
	_ = os.Remove(s.pidFile)
	return s.start(s.cmd.Path)
}

// TCPAddr is the plain TCP input.
func (s *Server) TCPAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort)) }

// TLSAddr is the TLS input (RFC 5425).
func (s *Server) TLSAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort)) }

// CAFile is the authority that signed the server's certificate.
func (s *Server) CAFile() string { return s.certs.CA }

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
			return nil, fmt.Errorf("syslogtest: line %d of rsyslog's output: %w: %s", len(out)+1, err, sc.Text())
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
		return 0, fmt.Errorf("syslogtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
