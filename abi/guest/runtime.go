package guest

//lint:file-ignore U1000 this runtime is reached from the //go:wasmexport functions of exports_wasip1.go, which a native build leaves out

import (
	"unsafe"

	"github.com/auditproc/auditproc/abi"
)

// One growable buffer serves every auditproc_alloc: the host writes the
// configuration or an input record into it right before the call that reads
// it, and nothing in it outlives that call.
var input []byte

// The single Event handed to the handler, reused for every event so that
// processing allocates nothing of its own in the steady state.
var current Event

const minInputCap = 4 << 10

func allocInput(size int) unsafe.Pointer {
	if size < 0 {
		return nil
	}
	if cap(input) < size || cap(input) == 0 {
		input = make([]byte, max(size, 2*cap(input), minInputCap))
	}
	input = input[:size]
	return unsafe.Pointer(unsafe.SliceData(input))
}

func runInit(config []byte) (status int32) {
	if handler == nil {
		setMessage("plugin registered no handler: call guest.Handle from an init function")
		return 1
	}
	if initFunc == nil {
		return 0
	}
	defer func() {
		if r := recover(); r != nil {
			setMessage("init panicked: " + panicText(r))
			status = 1
		}
	}()
	if err := initFunc(config); err != nil {
		setMessage(err.Error())
		return 1
	}
	return 0
}

func runProcess(record []byte) (verdict int32) {
	in, err := abi.DecodeInput(record)
	if err != nil {
		setMessage(err.Error())
		return int32(abi.VerdictRetry)
	}
	if handler == nil {
		setMessage("plugin registered no handler")
		return int32(abi.VerdictRetry)
	}
	ev := &current
	ev.reset(in)
	// A panic in the handler becomes a retry with its text rather than a
	// trap, so the operator reads why; the event is delivered again.
	defer func() {
		if r := recover(); r != nil {
			setMessage("handler panicked: " + panicText(r))
			verdict = int32(abi.VerdictRetry)
		}
	}()
	v := handler(ev)
	if v.msg != "" {
		setMessage(v.msg)
	}
	return int32(v.code)
}

func setMessage(msg string) { hostSetMessage(stringPtr(msg), int32(len(msg))) }

func panicText(r any) string {
	switch r := r.(type) {
	case error:
		return r.Error()
	case string:
		return r
	}
	return "non-error value"
}

func stringPtr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

func bytesPtr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
