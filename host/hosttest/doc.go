// Package hosttest holds the plugin conformance suite: Conformance runs any
// plugin through a real host pipeline with the inputs a plugin meets in
// production and a few it should never meet (empty, oversized, malformed,
// deeply nested and unusual events), and checks that it answers a valid
// verdict within its deadline and memory cap, never traps, and does not leak
// one event's output into the next.
//
// A plugin author runs it from a test of their own:
//
//	func TestConformance(t *testing.T) {
//		hosttest.Conformance(t, host.PluginSpec{Name: "redact", Path: "redact.wasm"})
//	}
//
// The package's own tests run every example plugin in plugins/examples
// through it, and check the outcome of every hostile fixture in
// plugins/fixtures.
package hosttest
