package bench

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/pgserver"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/syslogserver"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

var auditprocBin struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if auditprocBin.path != "" {
		_ = os.RemoveAll(filepath.Dir(auditprocBin.path))
	}
	os.Exit(code)
}

// binary builds the auditproc binary once per test run: the bench runs
// every scenario as a child process of it.
func binary(t *testing.T) string {
	t.Helper()
	auditprocBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "auditproc-bench-test-")
		if err != nil {
			auditprocBin.err = err
			return
		}
		auditprocBin.path = filepath.Join(dir, "auditproc")
		out, err := exec.Command("go", "build", "-o", auditprocBin.path, "github.com/auditproc/auditproc/cmd/auditproc").CombinedOutput()
		if err != nil {
			auditprocBin.err = &buildError{string(out)}
		}
	})
	require.NoError(t, auditprocBin.err, "build auditproc")
	return auditprocBin.path
}

type buildError struct{ out string }

func (e *buildError) Error() string { return e.out }

// smallConfig is a bench run of a few hundred entries on a test's Redis.
func smallConfig(t *testing.T, only ...string) Config {
	root := wasmtest.Root(t)
	return Config{
		Executable: binary(t),
		Entries:    300,
		Rounds:     1,
		Rate:       300,
		LatencyFor: time.Second,
		RedisURL:   redistest.Start(t).URL(),
		Pipeline:   filepath.Join(root, "plugins.yaml"),
		WasmDir:    wasmtest.Dir(t),
		CacheDir:   t.TempDir(),
		Only:       only,
	}
}

// runSmall runs the bench with cfg (smallConfig's), its progress in the
// test's log.
func runSmall(t *testing.T, cfg Config) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	require.NoError(t, err)
	return rep
}

// TestBenchSinkScenarios runs the postgres and syslog scenarios of
// `auditproc bench` beside the stream sink's, on a few hundred entries,
// against the real PostgreSQL and rsyslog the bench starts itself: every
// entry is drained and found at its destination (the bench checks the
// table's rows and rsyslog's messages), and the latency run measured.
func TestBenchSinkScenarios(t *testing.T) {
	if _, err := pgserver.Bin(); err != nil {
		redistest.SkipOrFail(t, err.Error())
	}
	if _, err := syslogserver.Bin(); err != nil {
		redistest.SkipOrFail(t, err.Error())
	}
	rep := runSmall(t, smallConfig(t, "forward", ScenarioPostgres, ScenarioSyslog))

	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Name)
		assert.Empty(t, r.Missing, r.Name)
		assert.Positive(t, r.Throughput, r.Name)
		assert.Positive(t, r.CPU, r.Name)
		assert.Positive(t, r.PeakRSS, r.Name)
		assert.True(t, r.Latency, r.Name)
		assert.Positive(t, r.LatN, r.Name)
		assert.GreaterOrEqual(t, r.P99, r.P50, r.Name)
	}
	assert.Equal(t, []string{"forward", ScenarioPostgres, ScenarioSyslog}, names, "the sink rows beside the stream sink's")

	var b strings.Builder
	rep.Print(&b)
	t.Log("\n" + b.String())
	assert.Contains(t, b.String(), "| auditproc: verify + forward to a PostgreSQL sink (guarded)")
	assert.Contains(t, b.String(), "| auditproc: verify + forward to a syslog sink, TCP (guarded)")
	assert.NotContains(t, b.String(), "not run")
}

// TestBenchSinkScenariosMissing: without PostgreSQL and rsyslog the sink
// rows say so and the rest of the bench runs.
func TestBenchSinkScenariosMissing(t *testing.T) {
	cfg := smallConfig(t, "baseline", ScenarioPostgres, ScenarioSyslog)
	cfg.PostgresBin = t.TempDir()
	cfg.Rsyslogd = filepath.Join(t.TempDir(), "rsyslogd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, nil)
	require.NoError(t, err)
	require.Len(t, rep.Results, 3)
	assert.Positive(t, rep.Results[0].Throughput, "the baseline ran")
	for _, r := range rep.Results[1:] {
		assert.NotEmpty(t, r.Missing, r.Name)
		assert.Zero(t, r.Throughput, r.Name)
	}
	var b strings.Builder
	rep.Print(&b)
	assert.Contains(t, b.String(), "PostgreSQL sink (guarded) — not run: PostgreSQL is not installed")
	assert.Contains(t, b.String(), "syslog sink, TCP (guarded) — not run: rsyslog is not installed")
}
