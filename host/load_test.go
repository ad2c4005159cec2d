package host_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

func TestLoadRefusesModulesThatBreakTheABI(t *testing.T) {
	tests := []struct {
		fixture string
		spec    host.PluginSpec
		err     error
		says    []string
	}{
		{fixture: "abi-v2", err: host.ErrABIVersion, says: []string{"module is built for ABI v2; this host speaks v1"}},
		{fixture: "missing-version", err: host.ErrABIVersion, says: []string{"auditproc_abi_v1"}},
		{fixture: "missing-process", err: host.ErrExports, says: []string{"auditproc_process (i32, i32) -> (i32)"}},
		{fixture: "missing-alloc", err: host.ErrExports, says: []string{"auditproc_alloc"}},
		{fixture: "missing-memory", err: host.ErrExports, says: []string{`"memory"`}},
		{fixture: "process-signature", err: host.ErrExports, says: []string{"export auditproc_process has signature (i32) -> (i32); the ABI wants (i32, i32) -> (i32)"}},
		{fixture: "export-start", err: host.ErrExports, says: []string{"_start", "reactor"}},
		{fixture: "import-sock", err: host.ErrImports, says: []string{"wasi_snapshot_preview1.sock_accept", "wasi_snapshot_preview1.sock_recv", "no network"}},
		{fixture: "import-unknown", err: host.ErrImports, says: []string{"env.system", `unknown module "env"`}},
		{fixture: "import-unknown-hostfn", err: host.ErrImports, says: []string{"auditproc.exec"}},
		{fixture: "import-signature", err: host.ErrImports, says: []string{"auditproc.log", "the host provides (i32, i32, i32) -> ()"}},
		{fixture: "import-memory", err: host.ErrImports, says: []string{"imports the memory"}},
		{fixture: "bigmem", spec: host.PluginSpec{MemoryLimitBytes: 16 << 20}, says: []string{"min 1024 pages (64 Mi) over limit of 256 pages"}},
		{fixture: "trap-init", err: host.ErrTrap, says: []string{"auditproc_init"}},
		{fixture: "refuse-init", err: host.ErrInitRefused, says: []string{"refuse-init: this plugin accepts no configuration"}},
		{fixture: "proc-exit-init", err: host.ErrExit, says: []string{"code 0"}},
		{fixture: "loop-init", spec: host.PluginSpec{InitDeadline: 100 * time.Millisecond}, err: host.ErrDeadline},
		{fixture: "panic-init-go", err: host.ErrTrap, says: []string{"_initialize", "main.init"}}, // Go aborts with unreachable
		{fixture: "host-call", spec: host.PluginSpec{Config: []byte(`{"r":1}`)}, err: host.ErrInitRefused, says: []string{"refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			spec := tt.spec
			spec.Name = tt.fixture
			spec.Path = wasmtest.Path(t, tt.fixture)
			start := time.Now()
			p, err := host.Load(context.Background(), spec, host.Config{})
			elapsed := time.Since(start)
			require.Error(t, err)
			assert.Nil(t, p)
			var le *host.LoadError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, tt.fixture, le.Plugin)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
			}
			for _, s := range tt.says {
				assert.Contains(t, err.Error(), s)
			}
			if tt.spec.InitDeadline > 0 {
				assert.Less(t, elapsed, tt.spec.InitDeadline+2*time.Second)
			}
		})
	}
}

func TestEmitDuringInitIsRefused(t *testing.T) {
	_, err := host.Load(context.Background(), host.PluginSpec{
		Name: "host-call", Path: wasmtest.Path(t, "host-call"), Sinks: []string{"audit"}, Config: []byte(`{"e":1}`),
	}, host.Config{})
	require.ErrorIs(t, err, host.ErrInitRefused)
	assert.Contains(t, err.Error(), "emit during init: \xfc\xff\xff\xff") // -4, little-endian
}

func TestLoadChecksThePinnedDigest(t *testing.T) {
	path := wasmtest.Path(t, "noop-c")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(b)
	good := hex.EncodeToString(sum[:])
	bad := hex.EncodeToString(make([]byte, 32))

	for _, pin := range []string{good, "sha256:" + good} {
		p, err := host.Load(context.Background(), host.PluginSpec{Name: "noop", Path: path, SHA256: pin}, host.Config{})
		require.NoError(t, err, pin)
		assert.Equal(t, good, p.SHA256())
		require.NoError(t, p.Close(context.Background()))
	}

	_, err = host.Load(context.Background(), host.PluginSpec{Name: "noop", Path: path, SHA256: bad}, host.Config{})
	require.ErrorIs(t, err, host.ErrDigestMismatch)
	assert.Contains(t, err.Error(), good)
	assert.Contains(t, err.Error(), bad)
	assert.Contains(t, err.Error(), path)

	_, err = host.Load(context.Background(), host.PluginSpec{Name: "noop", Path: path, SHA256: "abc"}, host.Config{})
	require.ErrorIs(t, err, host.ErrInvalidSpec)
}

func TestLoadRejectsInvalidSpecs(t *testing.T) {
	wasm := wasmtest.Bytes(t, "noop-c")
	for name, spec := range map[string]host.PluginSpec{
		"no name":        {Wasm: wasm},
		"no module":      {Name: "x"},
		"path and bytes": {Name: "x", Wasm: wasm, Path: "x.wasm"},
		"negative":       {Name: "x", Wasm: wasm, MaxEmits: -1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := host.Load(context.Background(), spec, host.Config{})
			require.ErrorIs(t, err, host.ErrInvalidSpec)
		})
	}
}

func TestLoadUsesTheCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	spec := host.PluginSpec{Name: "noop-go", Path: wasmtest.Path(t, "noop-go")}
	for range 2 {
		p, err := host.Load(context.Background(), spec, host.Config{CacheDir: dir})
		require.NoError(t, err)
		w, err := host.NewPipeline(p).NewWorker(context.Background())
		require.NoError(t, err)
		assert.Equal(t, abi.VerdictOK, w.Process(context.Background(), testEvent(event300)).Verdict)
		w.Release()
		require.NoError(t, p.Close(context.Background()))
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.NotEmpty(t, entries)
}

// TestLoadKeepsTheMeteredModule: the instrumented module is kept in the
// cache directory under the original's digest and used by the next load; a
// damaged copy is instrumented again and replaced.
func TestLoadKeepsTheMeteredModule(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache") // made by the first load
	wasm := wasmtest.Bytes(t, "noop-c")
	sum := sha256.Sum256(wasm)
	spec := host.PluginSpec{Name: "noop-c", Wasm: wasm}
	load := func() {
		t.Helper()
		p, err := host.Load(context.Background(), spec, host.Config{CacheDir: dir})
		require.NoError(t, err)
		defer p.Close(context.Background())
		assert.Equal(t, host.GuardMetered, p.Guard())
		w, err := host.NewPipeline(p).NewWorker(context.Background())
		require.NoError(t, err)
		defer w.Release()
		assert.Equal(t, abi.VerdictOK, w.Process(context.Background(), testEvent(event300)).Verdict)
	}
	load()
	kept, err := filepath.Glob(filepath.Join(dir, "meter*-"+hex.EncodeToString(sum[:])+".wasm"))
	require.NoError(t, err)
	require.Len(t, kept, 1, "the instrumented module is kept under the original's digest")
	metered, err := os.ReadFile(kept[0])
	require.NoError(t, err)
	assert.NotEqual(t, wasm, metered)

	info, err := os.Stat(kept[0])
	require.NoError(t, err)
	load()
	again, err := os.Stat(kept[0])
	require.NoError(t, err)
	assert.Equal(t, info.ModTime(), again.ModTime(), "the second load used it as it was")

	require.NoError(t, os.WriteFile(kept[0], metered[:len(metered)/2], 0o600))
	load()
	repaired, err := os.ReadFile(kept[0])
	require.NoError(t, err)
	assert.Equal(t, metered, repaired, "a damaged copy is replaced")
}

func TestInspect(t *testing.T) {
	wasm := wasmtest.Bytes(t, "noop-c")
	info, err := host.Inspect(context.Background(), wasm)
	require.NoError(t, err)
	assert.Equal(t, 1, info.ABIVersion)
	assert.Empty(t, info.Problems)
	assert.Contains(t, info.Exports, abi.ExportProcess)
	sum := sha256.Sum256(wasm)
	assert.Equal(t, hex.EncodeToString(sum[:]), info.SHA256)

	info, err = host.Inspect(context.Background(), wasmtest.Bytes(t, "import-sock"))
	require.NoError(t, err)
	require.NotEmpty(t, info.Problems)
	assert.ErrorIs(t, info.Problems[0], host.ErrImports)
	assert.Contains(t, info.Imports, host.Import{Module: "wasi_snapshot_preview1", Name: "sock_accept"})

	info, err = host.Inspect(context.Background(), wasmtest.Bytes(t, "abi-v2"))
	require.NoError(t, err)
	assert.Equal(t, 2, info.ABIVersion)

	_, err = host.Inspect(context.Background(), []byte("not wasm"))
	require.Error(t, err)
}
