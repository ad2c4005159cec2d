// Package syslogtest starts a throwaway, real rsyslog for a test:
// internal/syslogserver with its plain TCP and TLS inputs (RFC 5425, a
// certificate made at test time), stopped and removed in t.Cleanup. Every
// message it receives is parsed by rsyslog itself and written as one JSON
// line to a file the test reads back with Messages.
//
// When rsyslogd or its TLS driver is missing the test skips, or fails under
// AUDITPROC_NO_SKIP=1 (scripts/deps.sh installs rsyslog and rsyslog-gnutls).
package syslogtest

import (
	"testing"

	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/syslogserver"
)

// Message is one message as rsyslog parsed it.
type Message = syslogserver.Message

// Server is a running rsyslogd (see syslogserver.Server for its methods).
type Server struct {
	*syslogserver.Server
}

// Start starts rsyslogd and registers its end in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := syslogserver.Bin(); err != nil {
		redistest.SkipOrFail(t, err.Error())
	}
	if !syslogserver.TLSInstalled() {
		redistest.SkipOrFail(t, "syslogtest: rsyslog's TLS driver is not installed (scripts/deps.sh installs rsyslog-gnutls)")
	}
	srv, err := syslogserver.New(syslogserver.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{srv}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- rsyslogd output ---\n%s", s.Output())
		}
		s.Close()
	})
	return s
}
