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
// (abi/README.md; both SDKs do) needs one call per event instead of two.
// Measured on the shared 2-core development machine (BenchmarkProcess, a
// 300-byte event with its metadata, three runs):
//
//	guest                        guarded        trusted (no guard)
//	C no-op (SDK)                1.4–2.0 µs     0.22–0.27 µs
//	standard Go no-op (SDK)      4.0–5.0 µs     0.58–0.76 µs
//	C no-op, raw                 1.6–2.3 µs     0.25–0.31 µs
//	standard Go no-op, raw       2.3–2.9 µs     0.34–0.87 µs
//
// Extism's call costs 13–19 µs for a no-op on the same machine. A bare
// guarded call costs 1.2–1.5 µs against 20 ns unguarded, and 2.3 µs with a
// context.WithTimeout per call instead of the ticker (BenchmarkGuardStyles);
// The loop-header checks cost more than the call in a guest that loops a
// lot, since each check leaves the guest's code for Go (BenchmarkExamples):
//
//	redact (C, scans every byte of the event)        89–127 µs   9–10 µs
//	normalize (standard Go, five host field calls)   25 µs       7.5–10 µs
//
// When the machine is busy every guarded figure doubles or triples, while
// the trusted ones barely move. PluginSpec.Trusted turns the guard off for a
// vetted plugin: a no-op call gets 5 to 8 times cheaper, a scanning plugin
// up to 10 times, and a plugin that never returns then blocks its worker
// forever.
//
// An instance costs about 0.2–0.3 ms to create for C and 5–10 ms for
// standard Go (its runtime starts), and holds about 170 KB (C, 128 KiB of it
// linear memory) or 3.3 MB (Go, 2.4 MB of it linear) after its first event
// (BenchmarkInstantiate, BenchmarkInstanceMemory).
package host
