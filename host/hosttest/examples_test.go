package hosttest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/host/hosttest"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// exampleSpecs holds what an example needs beyond the defaults (its
// configuration, sinks, whether it keeps state across events), as its
// plugins.yaml entry would. An example not listed runs with the defaults.
var exampleSpecs = map[string]struct {
	spec host.PluginSpec
	opts []hosttest.Option
}{
	// detect counts failed logins per actor in a window: state by design.
	"detect": {
		spec: host.PluginSpec{Sinks: []string{"alerts"}, Config: []byte(`{"threshold":2}`)},
		opts: []hosttest.Option{hosttest.Stateful()},
	},
	"filter": {
		spec: host.PluginSpec{Config: []byte(`{"min_severity":"info","rules":[{"match":{"action":["healthcheck.*","*.ping"]},"then":"drop"}]}`)},
	},
	"forward": {
		spec: host.PluginSpec{Sinks: []string{"archive"}, Config: []byte(`{"sink":"archive"}`)},
	},
	"redact": {
		spec: host.PluginSpec{Config: []byte(`{"fields":["email","ssn","phone"]}`)},
	},
}

// TestExamplesConformance runs every example plugin, found by listing
// plugins/examples, through the conformance suite, so a new example is
// covered without touching this test.
func TestExamplesConformance(t *testing.T) {
	dir := filepath.Join(wasmtest.Root(t), "plugins", "examples")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	require.NotEmpty(t, names, "no example plugins in %s", dir)
	// One after the other: the suite checks deadlines, and plugins running
	// side by side on few cores would slow each other down.
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			ex := exampleSpecs[name]
			spec := ex.spec
			spec.Name = name
			spec.Path = wasmtest.Path(t, name)
			hosttest.Conformance(t, spec, ex.opts...)
		})
	}
}
