package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/auditproc/auditproc/internal/config"
)

// defaultHealthAddr is where `auditproc health` asks when neither --addr nor
// the configuration says otherwise: metrics.address's default.
const defaultHealthAddr = config.DefaultMetricsAddr

// healthCommand is the container health check: images built FROM scratch
// have no curl, so the binary asks its own /healthz (or /readyz, /metrics).
func healthCommand() *command {
	var (
		addr    string
		path    string
		timeout time.Duration
		quiet   bool
		cf      *configFlags
	)
	return &command{
		name:    "health",
		summary: "ask a running auditproc's /healthz (or /readyz, /metrics); exit 0 when it answers 2xx",
		usage:   "[--addr HOST:PORT] [--path /healthz] [--timeout 2s] [--quiet]",
		examples: `  # the image's HEALTHCHECK
  auditproc health --quiet

  # ready means: Redis answers and the loop runs
  auditproc health --path /readyz

  # the Prometheus metrics of a replica, from inside its container
  docker exec replica-1 /usr/local/bin/auditproc health --path /metrics

The address is --addr, else metrics.address as run reads it (--config or
AUDITPROC_CONFIG, then AUDITPROC_METRICS_ADDRESS), else 127.0.0.1:9464; a
wildcard host such as 0.0.0.0 is asked on 127.0.0.1. Exit status: 0 on a 2xx
answer, 1 otherwise.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.StringVar(&addr, "addr", "", "address of the metrics listener (default: the configured metrics.address, else "+defaultHealthAddr+")")
			fs.StringVar(&path, "path", "/healthz", "path to ask: /healthz, /readyz or /metrics")
			durationVar(fs, &timeout, "timeout", 2*time.Second, "give up after this long")
			fs.BoolVar(&quiet, "quiet", false, "print nothing; the exit status tells")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("health takes no arguments, got %q", args)
			}
			if !strings.HasPrefix(path, "/") {
				return usagef("health: --path %q must start with /", path)
			}
			configured := os.Getenv("AUDITPROC_METRICS_ADDRESS")
			if addr == "" {
				// The address run listens on: the same file, environment and
				// defaults. A configuration run would refuse falls back to
				// the environment alone.
				if cfg, err := cf.loadNoPipeline(); err == nil {
					configured = cfg.Metrics.Address
					if configured == "" {
						return usagef("health: metrics are off (metrics.address), so there is nothing to ask; give --addr")
					}
				}
			}
			target, err := healthTarget(addr, configured)
			if err != nil {
				return usageError{err}
			}
			return checkHealth(ctx, sio, "http://"+target+path, timeout, quiet)
		},
	}
}

// healthTarget picks the address to ask: flag, then environment, then the
// default; a wildcard or empty host becomes loopback.
func healthTarget(flagAddr, envAddr string) (string, error) {
	a := flagAddr
	if a == "" {
		a = envAddr
	}
	if a == "" {
		a = defaultHealthAddr
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("health: address %q: %v", a, err)
	}
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func checkHealth(ctx context.Context, sio stdio, url string, timeout time.Duration, quiet bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usagef("health: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("health: %s: read the answer: %w", url, err)
	}
	if !quiet {
		_, _ = sio.out.Write(body)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("health: %s answered %s", url, resp.Status)
	}
	return nil
}
