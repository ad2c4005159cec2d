package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// pipelineConfig is a configuration whose plugins are the built modules
// named, each plugin named after its module.
func pipelineConfig(t *testing.T, modules ...string) *config.Config {
	t.Helper()
	cfg := &config.Config{}
	for _, m := range modules {
		cfg.Plugins = append(cfg.Plugins, config.Plugin{Name: m, Path: wasmtest.Path(t, m), Deadline: time.Second})
	}
	return cfg
}

// settledGoroutines waits until the goroutine count is at most want (a
// closed plugin's deadline ticker ends shortly after Close) and returns it.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoadPipelineInOrder(t *testing.T) {
	cfg := pipelineConfig(t, "tag", "noop-c", "redact", "tag")
	cfg.Plugins[3].Name = "tag-again"
	p, err := loadPipeline(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer p.Close(context.Background())
	var names []string
	for _, pl := range p.Plugins() {
		names = append(names, pl.Name())
	}
	assert.Equal(t, []string{"tag", "noop-c", "redact", "tag-again"}, names)
}

func TestLoadPipelineBrokenPlugin(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	before := runtime.NumGoroutine()

	// The third plugin refuses its configuration: the error names it and
	// its position, and the plugins that did load are closed (each loaded,
	// guarded plugin runs a deadline ticker until it is closed).
	cfg := pipelineConfig(t, "tag", "noop-c", "refuse-init", "redact", "tag")
	cfg.Plugins[4].Name = "tag-again"
	p, err := loadPipeline(ctx, cfg, logger)
	require.Error(t, err)
	assert.Nil(t, p)
	var usage usageError
	require.ErrorAs(t, err, &usage, "a plugin that cannot load is a configuration error (exit 2)")
	assert.Equal(t, exitUsage, exitCode(err))
	assert.Contains(t, err.Error(), "plugins[2] (refuse-init)")
	assert.Contains(t, err.Error(), "refuse-init: this plugin accepts no configuration")
	assert.ErrorIs(t, err, host.ErrInitRefused)
	for _, other := range []string{"plugins[0]", "plugins[1]", "plugins[3]", "plugins[4]"} {
		assert.NotContains(t, err.Error(), other)
	}
	assert.LessOrEqual(t, settledGoroutines(before), before, "the plugins that loaded are closed")

	// Two broken plugins: the error names both, in pipeline order,
	// whichever failed first.
	cfg = pipelineConfig(t, "tag", "missing-process", "noop-c", "refuse-init")
	_, err = loadPipeline(ctx, cfg, logger)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "plugins[1] (missing-process)")
	assert.ErrorIs(t, err, host.ErrExports)
	assert.ErrorIs(t, err, host.ErrInitRefused)
	assert.Less(t, strings.Index(err.Error(), "plugins[1]"), strings.Index(err.Error(), "plugins[3] (refuse-init)"))
	assert.LessOrEqual(t, settledGoroutines(before), before, "the plugins that loaded are closed")

	// A missing file is named with its plugin too.
	cfg = pipelineConfig(t, "tag", "noop-c")
	cfg.Plugins = append(cfg.Plugins, config.Plugin{Name: "ghost", Path: t.TempDir() + "/ghost.wasm"})
	_, err = loadPipeline(ctx, cfg, logger)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "plugins[2] (ghost)")
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
	assert.LessOrEqual(t, settledGoroutines(before), before, "the plugins that loaded are closed")
}
