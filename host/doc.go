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
// context made once per instance (no timer per call) and one ticker goroutine
// per plugin cancels the context of an instance that is past its deadline,
// so a runaway guest stops within the deadline plus one tick
// (Deadline/8, at least 1ms and at most 25ms). What remains is wazero's
// watchdog goroutine per call (two per event: auditproc_alloc and
// auditproc_process) and the loop-header checks, which cost most in guests
// that loop a lot (standard Go). PluginSpec.Trusted turns the guard off for a
// vetted plugin: calls get several times cheaper, and a plugin that never
// returns then blocks its worker forever. See the package benchmarks and the
// README for the numbers measured on our guests.
package host
