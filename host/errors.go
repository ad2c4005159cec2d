package host

import (
	"errors"
	"fmt"

	"github.com/auditproc/auditproc/host/internal/precheck"
)

// Load errors. A *LoadError wraps one of them with the plugin's name.
var (
	// ErrModuleRefused: the module declares more than the host bounds
	// (locals of a function, table sizes, globals, vector counts, the name
	// section; see docs/plugins.md), so it is not handed to wazero.
	ErrModuleRefused = precheck.ErrRefused
	// ErrDigestMismatch: the module's SHA-256 is not the pinned one.
	ErrDigestMismatch = errors.New("host: module digest does not match the pinned sha256")
	// ErrABIVersion: the module is built for another ABI version, or for none.
	ErrABIVersion = errors.New("host: module ABI version not supported")
	// ErrExports: a required export is missing, has the wrong type, or a
	// forbidden one (_start) is present.
	ErrExports = errors.New("host: module exports do not match the ABI")
	// ErrImports: the module imports something the host does not offer.
	ErrImports = errors.New("host: module imports something the host does not offer")
	// ErrInitRefused: auditproc_init returned a non-zero status.
	ErrInitRefused = errors.New("host: plugin refused its configuration")
	// ErrInvalidSpec: the PluginSpec itself is wrong.
	ErrInvalidSpec = errors.New("host: invalid plugin spec")
)

// Causes of a verdict the host imposed (Result.Err wraps one of them in a
// *PluginError); each also discards the instance.
var (
	// ErrTrap: the guest trapped (unreachable, out-of-bounds access, stack
	// overflow, a failed memory access of a host function's arguments).
	ErrTrap = errors.New("host: plugin trapped")
	// ErrDeadline: the call ran past the plugin's deadline and was stopped.
	ErrDeadline = errors.New("host: plugin call exceeded its deadline")
	// ErrExit: the guest called proc_exit.
	ErrExit = errors.New("host: plugin exited")
	// ErrInvalidVerdict: auditproc_process returned a value that is no verdict.
	ErrInvalidVerdict = errors.New("host: plugin returned an invalid verdict")
	// ErrGuestMemory: auditproc_alloc returned 0 or a region outside memory.
	ErrGuestMemory = errors.New("host: plugin could not provide memory for its input")
	// ErrEventTooLarge: the event is larger than the plugin accepts; the
	// verdict is reject (the event can never pass this plugin).
	ErrEventTooLarge = errors.New("host: event exceeds the plugin's size limit")
	// ErrClosed: the plugin was closed.
	ErrClosed = errors.New("host: plugin closed")
)

// LoadError is returned by Load.
type LoadError struct {
	Plugin string // the plugin's name
	Err    error  // wraps one of the Err… load sentinels, or an I/O or compile error
}

func (e *LoadError) Error() string { return fmt.Sprintf("load plugin %q: %v", e.Plugin, e.Err) }
func (e *LoadError) Unwrap() error { return e.Err }

// PluginError is the cause of a verdict the host imposed on a plugin's call.
type PluginError struct {
	Plugin string // the plugin's name
	Err    error  // wraps one of ErrTrap, ErrDeadline, ErrExit, ErrInvalidVerdict, ErrGuestMemory, ErrEventTooLarge, ErrClosed
}

func (e *PluginError) Error() string { return fmt.Sprintf("plugin %q: %v", e.Plugin, e.Err) }
func (e *PluginError) Unwrap() error { return e.Err }
