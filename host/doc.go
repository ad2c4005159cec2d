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
// wazero can stop running guest code only when the runtime is built with
// close-on-context-done: it then compiles a check into every loop header and
// function entry, and starts a watchdog goroutine per call. The host keeps the
// per-call part as cheap as wazero allows: each instance is called with a
// context made once per instance (no timer per call), and one ticker
// goroutine per plugin cancels the context of an instance whose call is past
// its deadline, so a runaway guest stops within its deadline plus one tick
// (Deadline/8, at least 1ms and at most 25ms). Cancelling the context lets
// wazero stop the guest at its next check and release the instance's
// resources only after the call unwound, which a concurrent
// api.Module.CloseWithExitCode does not wait for.
//
// What remains is wazero's watchdog goroutine per guest call, which no
// context can avoid. A guest that exports the auditproc_alloc_reuse marker
// (abi/README.md) needs one call per event instead of two. Measured on the
// shared 2-core development machine (busy; BenchmarkProcess, a 300-byte event
// with its metadata, the best of three runs and the spread):
//
//	guest                           guarded        trusted
//	C no-op, reuse marker           1.6 µs (–3)    0.31 µs
//	standard Go no-op, reuse marker 2.1 µs (–7)    0.70 µs (–1.9)
//	C no-op (SDK, alloc per event)  6.8 µs (–13)   0.37 µs
//	Go no-op (SDK, alloc per event) 7.5 µs (–17)   1.1 µs (–1.7)
//
// A bare guarded call costs 2–5 µs against 22 ns unguarded
// (BenchmarkGuardStyles) on that machine; the loop-header checks add to it in
// guests that loop a lot (standard Go). PluginSpec.Trusted turns the guard
// off for a vetted plugin: calls get 5 to 20 times cheaper, and a plugin that
// never returns then blocks its worker forever.
//
// An instance costs about 0.2–0.35 ms to create for C and 7–18 ms for
// standard Go (runtime start), and holds about 170 KB (C, 128 KiB of it
// linear memory) or 3.3 MB (Go, 2.4 MB linear) after its first event.
package host
