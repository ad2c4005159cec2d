package abi

import "strconv"

// Version is the ABI version this package describes. A module declares the
// version it was built for by exporting a function named VersionExportPrefix
// followed by the decimal version ("auditproc_abi_v1").
const Version = 1

// Module is the import module every host function lives in.
const Module = "auditproc"

// Names of the guest's exports.
const (
	// ExportMemory is the guest's linear memory. Required.
	ExportMemory = "memory"
	// VersionExportPrefix + "1" is the version marker, a function taking and
	// returning nothing; the host never calls it. Required.
	VersionExportPrefix = "auditproc_abi_v"
	// ExportVersion is the marker of this version.
	ExportVersion = "auditproc_abi_v1"
	// ExportAlloc is (size i32) -> (ptr i32). Required.
	ExportAlloc = "auditproc_alloc"
	// ExportInit is (ptr i32, len i32) -> (status i32). Optional.
	ExportInit = "auditproc_init"
	// ExportProcess is (ptr i32, len i32) -> (verdict i32). Required.
	ExportProcess = "auditproc_process"
	// ExportInitialize is the reactor start function, called first when exported.
	ExportInitialize = "_initialize"
	// ExportStart is the command start function; a plugin must not export it.
	ExportStart = "_start"
	// ExportAllocReuse is an optional marker, () -> (), never called: the
	// region auditproc_alloc last returned stays reserved for the host until
	// it calls auditproc_alloc again, so the host may write a later input of
	// at most that size there without calling auditproc_alloc. It saves one
	// guest call per event (added to v1 without breaking it: a host that
	// ignores the marker calls auditproc_alloc every time, as before).
	ExportAllocReuse = "auditproc_alloc_reuse"
)

// Names of the host functions in Module.
const (
	// FuncLog is (level i32, ptr i32, len i32).
	FuncLog = "log"
	// FuncSetMessage is (ptr i32, len i32): the message attached to the verdict.
	FuncSetMessage = "set_message"
	// FuncSetEvent is (ptr i32, len i32) -> (result i32): replace the event.
	FuncSetEvent = "set_event"
	// FuncEmit is (sink_ptr, sink_len, ptr, len i32) -> (result i32).
	FuncEmit = "emit"
	// FuncEventGet is (path_ptr, path_len, out_ptr, out_cap i32) -> (len i32).
	FuncEventGet = "event_get"
	// FuncEventSet is (path_ptr, path_len, val_ptr, val_len i32) -> (result i32).
	FuncEventSet = "event_set"
	// FuncEventDelete is (path_ptr, path_len i32) -> (result i32).
	FuncEventDelete = "event_delete"
)

// Verdict is what auditproc_process returns for an event.
type Verdict int32

const (
	// VerdictOK: go on with the next plugin; ack when the last one is done.
	VerdictOK Verdict = 0
	// VerdictDrop: stop the pipeline and ack; nothing is emitted.
	VerdictDrop Verdict = 1
	// VerdictRetry: fail for now; the event stays pending and is retried.
	VerdictRetry Verdict = 2
	// VerdictReject: the event can never succeed; dead-letter it now.
	VerdictReject Verdict = 3
)

// String returns the verdict's lowercase name, or "invalid(N)".
func (v Verdict) String() string {
	switch v {
	case VerdictOK:
		return "ok"
	case VerdictDrop:
		return "drop"
	case VerdictRetry:
		return "retry"
	case VerdictReject:
		return "reject"
	}
	return "invalid(" + strconv.Itoa(int(v)) + ")"
}

// Valid reports whether v is one of the four verdicts.
func (v Verdict) Valid() bool { return v >= VerdictOK && v <= VerdictReject }

// Results of host functions that return an i32. Non-negative values are
// successes (a length for FuncEventGet); negative values are errors.
const (
	ResultOK = 0
	// ErrNotFound: the path does not exist in the event.
	ErrNotFound = -1
	// ErrNotGranted: the sink was not granted to this plugin in plugins.yaml.
	ErrNotGranted = -2
	// ErrLimit: a size or count limit was reached (see the README's limits).
	ErrLimit = -3
	// ErrInvalid: a bad argument (malformed path, invalid JSON value, a call
	// not allowed in this phase, such as emit during init).
	ErrInvalid = -4
)

// LogLevel is the first argument of FuncLog.
type LogLevel int32

const (
	LogDebug LogLevel = 0
	LogInfo  LogLevel = 1
	LogWarn  LogLevel = 2
	LogError LogLevel = 3
)

// Limits the host applies by default (an operator may lower or raise some in
// plugins.yaml; see the README).
const (
	DefaultMaxEventBytes   = 1 << 20
	DefaultMaxEmits        = 16
	DefaultMaxEmitBytes    = 256 << 10
	DefaultMaxMessageBytes = 1 << 10
	DefaultMaxLogBytes     = 4 << 10
)
