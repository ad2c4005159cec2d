// Package pgtest starts a throwaway, real PostgreSQL server for a test:
// internal/pgserver (Debian's postgresql package, a cluster in a temporary
// directory on 127.0.0.1 with TLS and a password made at test time), ended
// and removed in t.Cleanup.
//
// A test can stop, kill and restart the server; the port and the data stay.
// When PostgreSQL is not installed the test skips, or fails under
// AUDITPROC_NO_SKIP=1 (scripts/deps.sh installs it).
package pgtest

import (
	"testing"

	"github.com/auditproc/auditproc/internal/pgserver"
	"github.com/auditproc/auditproc/internal/redistest"
)

// EnvBin names a directory holding initdb and pg_ctl, overriding the search.
const EnvBin = pgserver.EnvBin

// User is the database superuser the server is created with.
const User = pgserver.User

// Server is a running PostgreSQL cluster (see pgserver.Server for its
// methods).
type Server struct {
	*pgserver.Server
}

// Bin finds the directory of initdb and pg_ctl.
func Bin() (string, error) { return pgserver.Bin() }

// Start creates a cluster, starts it and registers its removal in
// t.Cleanup (the server log is printed when t failed).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := pgserver.Bin(); err != nil {
		redistest.SkipOrFail(t, err.Error())
	}
	srv, err := pgserver.New("")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{srv}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- postgresql log ---\n%s", s.Logs())
		}
		_ = s.Close()
	})
	return s
}
