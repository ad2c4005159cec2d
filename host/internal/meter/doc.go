// Package meter rewrites a WebAssembly module so that the host can stop it
// at a deadline without the cost of wazero's own guard.
//
// wazero's guard (RuntimeConfig.WithCloseOnContextDone) leaves native code
// for Go at every loop iteration and starts a goroutine per call, which makes
// loop-heavy plugins ten times slower. Instrument instead gives the module a
// counter (a mutable i32 global of its own) that every loop iteration and
// every function entry decrements; when it runs out, the module calls the
// host function ImportModule.ImportName, which checks the running call's
// deadline and traps the guest when it is past, and the counter starts again
// from the period. Bulk memory instructions (memory.fill, memory.copy,
// memory.init) take one unit per 64 KiB they touch and bulk table
// instructions (table.fill, table.copy, table.init) one per 4,096 elements,
// so a loop of large fills is stopped as promptly as a loop of small steps.
//
// Function entries are metered too, so a guest recursing without loops (which
// wazero's guard does not see) is stopped at its deadline as well.
//
// The rewrite keeps the module's behaviour: the new import comes after the
// module's own function imports, so every later function index moves up by
// one, and the rewrite renumbers calls, ref.func, exports, the start
// function, element segments and the function and local names of the "name"
// section. Sections it cannot keep exact (DWARF, other name subsections) are
// dropped. A module using an instruction the rewrite does not know is
// refused with ErrUnsupported, and the host refuses to run it guarded. A
// module nesting control structures past MaxNesting, MaxLoopNesting or
// MaxWork is refused with ErrTooComplex.
package meter
