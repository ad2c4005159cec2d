// Package host runs auditproc plugins: WebAssembly modules that implement the
// plugin ABI (see abi/README.md), sandboxed by wazero.
//
// Load reads a module, checks its pinned SHA-256, compiles it once, checks its
// exports and imports against the ABI and instantiates it once to run its
// auditproc_init. NewPipeline orders loaded plugins; each goroutine that
// processes events takes its own Worker, which keeps one instance per plugin
// (a module instance is not safe for concurrent use). Worker.Process returns
// one verdict per event.
//
// # Sandbox
//
// A plugin gets WASI with no filesystem, network, environment, arguments or
// real clock (unless PluginSpec.AllowClock), its stdout and stderr go to the
// log line by line, capped and rate-limited, its memory is capped
// (PluginSpec.MemoryLimitBytes) and every call has a deadline
// (PluginSpec.Deadline). An instance that traps, overruns its deadline, calls
// proc_exit, returns an invalid verdict, hands back an out-of-range pointer or
// breaks a limit is discarded and the event's verdict is retry; the next event
// gets a fresh instance.
//
// # The deadline guard and its cost
//
// wazero's own guard (close-on-context-done) leaves the guest's native code
// for Go at every loop iteration and starts a watchdog goroutine per call,
// which made a guarded no-op call cost 1–2 µs and a loop-heavy plugin ten
// times its trusted cost. The host therefore meters guests itself: at load
// it instruments the module (host/internal/meter) with a counter that every
// loop iteration and function entry decrements and bulk memory instructions
// charge by size; every 4096 points the guest calls the host, which stops
// the call when it is past its deadline. A runaway guest (a loop, recursion
// without loops, a loop of large fills) stops within about a millisecond of
// its deadline (TestGuardStopsRunaways), and one ticker per plugin also
// marks overdue calls. A module the meter cannot instrument is refused at
// load unless the plugin is trusted: no other guard sees recursion without
// loops or straight-line bulk instructions (Plugin.Guard tells which guard
// a plugin has). So is any module, trusted or not, whose control structures
// nest too deep to compile within bounds (meter.MaxNesting).
//
// Measured on the shared 2-core development machine (BenchmarkExamples,
// BenchmarkProcess, BenchmarkPluginCall in internal/processor), a 300-byte
// event, when the meter replaced wazero's guard:
//
//	guest                          metered (default)   wazero's guard   trusted
//	C no-op (SDK)                  0.18 µs             4.3 µs           0.18 µs
//	standard Go no-op (SDK)        0.46 µs             2.4 µs           0.46 µs
//	redact (C, scans every byte)   8.0 µs              70 µs            6.7 µs
//	normalize (Go, host calls)     8.8 µs              16 µs            7.6 µs
//	the default 5-plugin pipeline  24 µs               114 µs           21–25 µs
//
// (redact has since been rewritten, 2.0 µs metered; the default pipeline
// costs 14–16 µs metered, 12.5 µs trusted: docs/performance.md.)
//
// Extism's call costs 13–19 µs for a no-op on the same machine. A guest that
// exports the auditproc_alloc_reuse marker (abi/README.md; both SDKs do)
// needs one call per event instead of two. PluginSpec.Trusted turns the guard
// off; it now saves little, and a plugin that never returns then blocks its
// worker forever.
//
// An instance costs about 0.2–0.3 ms to create for C and 5–10 ms for
// standard Go (its runtime starts), and holds about 170 KB (C, 128 KiB of it
// linear memory) or 3.3 MB (Go, 2.4 MB of it linear) after its first event
// (BenchmarkInstantiate, BenchmarkInstanceMemory).
package host
