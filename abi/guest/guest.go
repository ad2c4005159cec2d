package guest

import (
	"errors"
	"strconv"

	"github.com/auditproc/auditproc/abi"
)

// Errors returned by the Event methods for the ABI's negative result codes.
var (
	// ErrNotFound: the path does not exist in the event.
	ErrNotFound = errors.New("guest: not found")
	// ErrNotGranted: the sink is not granted to this plugin in plugins.yaml.
	ErrNotGranted = errors.New("guest: sink not granted")
	// ErrLimit: a size or count limit of the host was reached.
	ErrLimit = errors.New("guest: limit reached")
	// ErrInvalid: a malformed path, invalid JSON, or a call not allowed now
	// (event functions during init).
	ErrInvalid = errors.New("guest: invalid argument")
)

func resultErr(r int32) error {
	switch r {
	case abi.ErrNotFound:
		return ErrNotFound
	case abi.ErrNotGranted:
		return ErrNotGranted
	case abi.ErrLimit:
		return ErrLimit
	case abi.ErrInvalid:
		return ErrInvalid
	}
	if r < 0 {
		return errors.New("guest: host returned " + strconv.Itoa(int(r)))
	}
	return nil
}

// Verdict is what a handler returns: one of the ABI's four verdicts and an
// optional message the host attaches to it (dead-letter reason, retry
// cause). The zero Verdict is OK.
type Verdict struct {
	code abi.Verdict
	msg  string
}

// OK lets the event go on to the next plugin; the zero Verdict.
var OK = Verdict{}

// Drop stops the pipeline and acks the event; emits are discarded.
func Drop(msg string) Verdict { return Verdict{abi.VerdictDrop, msg} }

// Retry leaves the event pending so it is delivered again later. Use it for
// failures that may pass (a missing dependency), never for a malformed event.
func Retry(msg string) Verdict { return Verdict{abi.VerdictRetry, msg} }

// Reject dead-letters the event now with msg as the reason: it can never
// succeed, so retrying it would loop forever.
func Reject(msg string) Verdict { return Verdict{abi.VerdictReject, msg} }

// Code returns the verdict's ABI value.
func (v Verdict) Code() abi.Verdict { return v.code }

// Message returns the message attached to the verdict.
func (v Verdict) Message() string { return v.msg }

// Handler processes one event. The *Event and every slice it returns are
// valid only until the handler returns.
type Handler func(ev *Event) Verdict

// InitFunc checks and keeps the plugin's configuration: the JSON text of its
// config: mapping in plugins.yaml, "{}" when absent. The slice is reused
// after the call: copy what you keep (encoding/json does). A non-nil error
// refuses the configuration and the plugin does not load; its text is the
// message the operator reads.
type InitFunc func(config []byte) error

// The registrations are made by init functions before the host calls
// anything, and read only by the exported functions.
//
//lint:ignore U1000 reached from the //go:wasmexport functions of exports_wasip1.go, which a native build leaves out
var (
	handler  Handler
	initFunc InitFunc
)

// Handle registers the function called for every event. Call it from an init
// function: main never runs in a plugin.
func Handle(h Handler) { handler = h }

// Init registers the function that receives the configuration, once per
// instance before the first event. Without it any configuration is accepted.
func Init(f InitFunc) { initFunc = f }

// Log writes msg to auditproc's log under the plugin's name. The host caps
// the size of a line and rate-limits them.
func Log(level abi.LogLevel, msg string) {
	hostLog(int32(level), stringPtr(msg), int32(len(msg)))
}

// LogDebug logs msg at debug level.
func LogDebug(msg string) { Log(abi.LogDebug, msg) }

// LogInfo logs msg at info level.
func LogInfo(msg string) { Log(abi.LogInfo, msg) }

// LogWarn logs msg at warn level.
func LogWarn(msg string) { Log(abi.LogWarn, msg) }

// LogError logs msg at error level.
func LogError(msg string) { Log(abi.LogError, msg) }
