package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

// Defaults of SyslogConfig.
const (
	DefaultSyslogFacility = "audit" // facility 13, "log audit"
	DefaultSyslogSeverity = "info"
	DefaultSyslogAppName  = "auditproc"
	DefaultSyslogMsgID    = "audit"
	// DefaultSyslogSDID is the SD-ID of the structured data: "auditproc" at
	// 32473, the enterprise number RFC 5612 reserves for documentation;
	// sites with their own number set theirs.
	DefaultSyslogSDID    = "auditproc@32473"
	DefaultSyslogTimeout = 10 * time.Second
)

// SyslogConfig configures a syslog sink.
type SyslogConfig struct {
	// Address is host:port of the collector.
	Address string
	// TLS turns on RFC 5425 (syslog over TLS); otherwise plain TCP.
	TLS bool
	// CAFile is the PEM bundle that verifies the collector's certificate;
	// empty uses the system's roots.
	CAFile string
	// CertFile and KeyFile are a client certificate, for collectors that
	// authenticate their senders.
	CertFile, KeyFile string
	// ServerName checks the collector's certificate; default the host of
	// Address.
	ServerName string
	// Facility is a facility name (kern … local7, audit). Default
	// DefaultSyslogFacility.
	Facility string
	// Severity is used when the event has no recognised "severity" member.
	// Default DefaultSyslogSeverity.
	Severity string
	// Hostname in the header; default the machine's host name.
	Hostname string
	// AppName default DefaultSyslogAppName; MsgID default DefaultSyslogMsgID.
	AppName, MsgID string
	// SDID is the structured data's SD-ID. Default DefaultSyslogSDID.
	SDID string
	// Timeout bounds connecting and one Write. Default DefaultSyslogTimeout.
	Timeout time.Duration
}

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

var severities = map[string]int{
	"emerg": 0, "emergency": 0, "alert": 1, "crit": 2, "critical": 2, "err": 3, "error": 3,
	"warning": 4, "warn": 4, "notice": 5, "info": 6, "informational": 6, "debug": 7,
}

func (c *SyslogConfig) defaults() {
	if c.Facility == "" {
		c.Facility = DefaultSyslogFacility
	}
	if c.Severity == "" {
		c.Severity = DefaultSyslogSeverity
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.AppName == "" {
		c.AppName = DefaultSyslogAppName
	}
	if c.MsgID == "" {
		c.MsgID = DefaultSyslogMsgID
	}
	if c.SDID == "" {
		c.SDID = DefaultSyslogSDID
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultSyslogTimeout
	}
}

// Validate checks c after defaults.
func (c SyslogConfig) Validate() error {
	c.defaults()
	var errs []error
	if _, _, err := net.SplitHostPort(c.Address); err != nil || c.Address == "" {
		errs = append(errs, fmt.Errorf("address %q must be host:port", c.Address))
	}
	if _, ok := facilities[c.Facility]; !ok {
		errs = append(errs, fmt.Errorf("facility %q is not a syslog facility (kern … local7, audit)", c.Facility))
	}
	if _, ok := severities[c.Severity]; !ok {
		errs = append(errs, fmt.Errorf("severity %q is not a syslog severity (emerg … debug)", c.Severity))
	}
	for _, f := range []struct {
		key, v string
		max    int
	}{{"hostname", c.Hostname, 255}, {"app_name", c.AppName, 48}, {"msg_id", c.MsgID, 32}, {"sd_id", c.SDID, 32}} {
		if !printASCII(f.v, f.max) || (f.key == "sd_id" && strings.ContainsAny(f.v, `= ]"`)) {
			errs = append(errs, fmt.Errorf("%s %q must be 1 to %d printable ASCII characters (RFC 5424)", f.key, f.v, f.max))
		}
	}
	if !c.TLS && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != "") {
		errs = append(errs, errors.New("ca_file, cert_file and key_file need tls: true"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file go together"))
	}
	return errors.Join(errs...)
}

func printASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// Syslog sends events as RFC 5424 messages over TCP with octet-counting
// framing (RFC 6587) or over TLS (RFC 5425). The structured data carries
// the event id, entry id, stream and key id; the message is the event's
// JSON. It reconnects on its own: a connection the collector closed is
// noticed before the next batch and replaced.
//
// A syslog collector sends no acknowledgement: a batch counts as confirmed
// once the collector's TCP stack acknowledged every byte of it (on Linux;
// elsewhere once the kernel accepted it), so a collector process that dies
// before reading its socket may still lose the batch's tail (docs/sinks.md).
type Syslog struct {
	name     string
	cfg      SyslogConfig
	log      *slog.Logger
	tls      *tls.Config
	facility int
	severity int
	header   string // " HOSTNAME APP-NAME PROCID MSGID "

	mu   sync.Mutex
	conn net.Conn
	tcp  *net.TCPConn // under conn, for the send queue
	w    *bufio.Writer
	buf  []byte
}

// NewSyslog validates cfg and loads the TLS files; it connects on the
// first Write.
func NewSyslog(name string, cfg SyslogConfig, logger *slog.Logger) (*Syslog, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sink %q: %w", name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Syslog{name: name, cfg: cfg, log: logger, facility: facilities[cfg.Facility], severity: severities[cfg.Severity],
		header: " " + cfg.Hostname + " " + cfg.AppName + " " + strconv.Itoa(os.Getpid()) + " " + cfg.MsgID + " "}
	if cfg.TLS {
		tc, err := clientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile, cfg.ServerName, cfg.Address)
		if err != nil {
			return nil, fmt.Errorf("sink %q: %w", name, err)
		}
		s.tls = tc
	}
	return s, nil
}

// clientTLS builds a client TLS configuration (TLS 1.2 or newer).
func clientTLS(caFile, certFile, keyFile, serverName, addr string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// Write sends every item, framed, and flushes. A failure on a connection
// that was already open is retried once on a fresh one (the collector may
// have restarted); the items carry their event id, so a repeat is
// recognisable.
func (s *Syslog) Write(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	deadline := time.Now().Add(s.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		fresh := s.conn == nil
		if s.conn != nil && peerClosed(s.conn) {
			s.drop()
			fresh = true
		}
		if s.conn == nil {
			if err = s.dial(ctx, deadline); err != nil {
				return err
			}
		}
		if err = s.send(items, deadline); err == nil {
			return nil
		}
		s.drop()
		if fresh {
			break
		}
	}
	return err
}

func (s *Syslog) dial(ctx context.Context, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var (
		c   net.Conn
		err error
	)
	var d net.Dialer
	c, err = d.DialContext(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("sink %q: connect to %s: %w", s.name, s.cfg.Address, err)
	}
	s.tcp, _ = c.(*net.TCPConn)
	if s.tls != nil {
		tc := tls.Client(c, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return fmt.Errorf("sink %q: TLS handshake with %s: %w", s.name, s.cfg.Address, err)
		}
		c = tc
	}
	s.conn = c
	if s.w == nil {
		s.w = bufio.NewWriterSize(c, 64<<10)
	} else {
		s.w.Reset(c)
	}
	return nil
}

func (s *Syslog) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
		s.tcp = nil
	}
}

func (s *Syslog) send(items []Item, deadline time.Time) error {
	_ = s.conn.SetWriteDeadline(deadline)
	for _, it := range items {
		s.buf = s.format(s.buf[:0], it)
		if _, err := s.w.WriteString(strconv.Itoa(len(s.buf))); err != nil {
			return fmt.Errorf("sink %q: send: %w", s.name, err)
		}
		_ = s.w.WriteByte(' ')
		if _, err := s.w.Write(s.buf); err != nil {
			return fmt.Errorf("sink %q: send: %w", s.name, err)
		}
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("sink %q: send: %w", s.name, err)
	}
	if s.tcp != nil && !waitAcked(s.tcp, deadline) {
		return fmt.Errorf("sink %q: %s did not acknowledge the batch within the timeout", s.name, s.cfg.Address)
	}
	return nil
}

// Format returns the RFC 5424 message (without framing) for it.
func (s *Syslog) Format(it Item) []byte { return s.format(nil, it) }

func (s *Syslog) format(b []byte, it Item) []byte {
	f := gjson.GetManyBytes(it.Event, "timestamp", "severity")
	sev := s.severity
	if v, ok := severities[strings.ToLower(f[1].Str)]; ok && f[1].Type == gjson.String {
		sev = v
	}
	ts := time.Now()
	if t, err := time.Parse(time.RFC3339Nano, f[0].Str); err == nil && f[0].Type == gjson.String {
		ts = t
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(s.facility*8+sev), 10)
	b = append(b, ">1 "...)
	b = ts.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z") // TIME-SECFRAC: at most 6 digits
	b = append(b, s.header...)
	b = append(b, '[')
	b = append(b, s.cfg.SDID...)
	for _, p := range [...]struct{ k, v string }{{"event_id", it.EventID}, {"entry_id", it.EntryID}, {"stream", it.Stream}, {"key_id", it.KeyID}} {
		b = append(b, ' ')
		b = append(b, p.k...)
		b = append(b, `="`...)
		b = appendParamValue(b, p.v)
		b = append(b, '"')
	}
	b = append(b, "] "...)
	return append(b, it.Event...)
}

// appendParamValue escapes '"', '\' and ']' (RFC 5424 section 6.3.3).
func appendParamValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"', '\\', ']':
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return b
}

// peerClosed reports whether the collector closed c (or it broke): a
// write to such a connection would seem to succeed and be lost.
func peerClosed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := c.Read(one[:])
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Close closes the connection.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop()
	return nil
}
