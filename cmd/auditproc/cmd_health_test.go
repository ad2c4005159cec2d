package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHealthTarget(t *testing.T) {
	tests := []struct {
		flag, env, want string
	}{
		{"", "", "127.0.0.1:9464"},
		{"", "0.0.0.0:9500", "127.0.0.1:9500"},
		{"", ":9501", "127.0.0.1:9501"},
		{"10.0.0.5:9464", "0.0.0.0:1", "10.0.0.5:9464"},
		{"[::]:9464", "", "127.0.0.1:9464"},
	}
	for _, tt := range tests {
		got, err := healthTarget(tt.flag, tt.env)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got, "flag %q env %q", tt.flag, tt.env)
	}
	_, err := healthTarget("no-port", "")
	require.Error(t, err)
}

// TestHealth asks a real HTTP server on loopback: 2xx exits 0 with the body
// printed, anything else (or nothing listening) is an error.
func TestHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	call := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"health"}, args...), stdio{in: strings.NewReader(""), out: &out, err: &errOut})
		return out.String(), err
	}
	out, err := call("--addr", addr)
	require.NoError(t, err)
	assert.Equal(t, "ok\n", out)

	out, err = call("--addr", addr, "--quiet")
	require.NoError(t, err)
	assert.Empty(t, out)

	_, err = call("--addr", addr, "--path", "/readyz")
	require.Error(t, err)
	assert.Equal(t, exitFail, exitCode(err))
	assert.Contains(t, err.Error(), "503")

	require.NoError(t, srv.Close())
	_, err = call("--addr", addr)
	require.Error(t, err)
	assert.Equal(t, exitFail, exitCode(err))

	_, err = call("--path", "healthz")
	assert.Equal(t, exitUsage, exitCode(err))
}

// TestHealthUsesConfiguredAddress: without --addr, health asks the address
// run listens on, metrics.address of the configuration file (a wildcard host
// asked on loopback); the file's value wins over nothing else set.
func TestHealthUsesConfiguredAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	t.Setenv("AUDITPROC_METRICS_ADDRESS", "")
	t.Setenv("AUDITPROC_CONFIG", "")

	file := writeFile(t, t.TempDir(), "plugins.yaml", "metrics:\n  address: 0.0.0.0:"+port+"\n")
	out, errOut, code := runCLI(t, "health", "--config", file)
	assert.Equal(t, exitOK, code, errOut)
	assert.Equal(t, "ok\n", out)

	off := writeFile(t, t.TempDir(), "plugins.yaml", "metrics:\n  address: \"off\"\n")
	_, errOut, code = runCLI(t, "health", "--config", off)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "metrics are off")
}
