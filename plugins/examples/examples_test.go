package examples_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// cacheDir keeps compiled modules for the whole test binary: a Go plugin
// takes seconds to compile, and most tests load the same few modules.
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "auditproc-examples-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// load loads the example plugin name, built from the source in this
// directory, with the JSON configuration config and the sinks given.
func load(t *testing.T, name, config string, sinks ...string) *host.Plugin {
	t.Helper()
	p, err := loadErr(t, name, config, sinks...)
	require.NoError(t, err)
	return p
}

func loadErr(t *testing.T, name, config string, sinks ...string) (*host.Plugin, error) {
	t.Helper()
	p, err := host.Load(context.Background(), host.PluginSpec{
		Name:   name,
		Path:   wasmtest.Path(t, name),
		Config: []byte(config),
		Sinks:  sinks,
	}, host.Config{CacheDir: cacheDir})
	if err == nil {
		t.Cleanup(func() { _ = p.Close(context.Background()) })
	}
	return p, err
}

func worker(t *testing.T, plugins ...*host.Plugin) *host.Worker {
	t.Helper()
	w, err := host.NewPipeline(plugins...).NewWorker(context.Background())
	require.NoError(t, err)
	t.Cleanup(w.Release)
	return w
}

// process runs one event through w, as the first delivery of an entry whose
// id is derived from the event's event_id.
func process(t *testing.T, w *host.Worker, event string) host.Result {
	t.Helper()
	var head struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal([]byte(event), &head)
	res := w.Process(context.Background(), host.Event{
		EntryID:    "1714564800000-0",
		Stream:     "audit:stream",
		KeyID:      "k1",
		EventID:    head.EventID,
		Deliveries: 1,
		Data:       []byte(event),
	})
	require.NoError(t, res.Err, "the host imposed the verdict")
	require.True(t, res.Verdict.Valid())
	return res
}

// requireVerdict checks a verdict and, for anything but ok, its message.
func requireVerdict(t *testing.T, res host.Result, want abi.Verdict, msg string) {
	t.Helper()
	require.Equal(t, want.String(), res.Verdict.String(), "message: %q", res.Message)
	if want != abi.VerdictOK {
		require.Equal(t, msg, res.Message)
	}
}
