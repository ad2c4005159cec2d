package guest

import (
	"github.com/auditproc/auditproc/abi"
)

// Event is the event being processed and the record it came with. Its
// methods read and change the event through the host; the slices they return
// alias buffers reused for the next event, so copy what you keep past the
// handler (string conversions copy).
type Event struct {
	in abi.Input
	// changed is set once the event was changed through the host, so the
	// input bytes are stale and Bytes asks the host for the current text.
	changed bool
	// arena holds the values returned by Get during one event: each Get
	// appends, so earlier results stay valid until the handler returns.
	arena []byte
	// scratch builds values to send (SetString).
	scratch []byte
}

//lint:ignore U1000 reached from the //go:wasmexport functions of exports_wasip1.go, which a native build leaves out
const minArenaCap = 4 << 10

//lint:ignore U1000 reached from the //go:wasmexport functions of exports_wasip1.go, which a native build leaves out
func (e *Event) reset(in abi.Input) {
	e.in = in
	e.changed = false
	if cap(e.arena) == 0 {
		e.arena = make([]byte, 0, minArenaCap)
	}
	e.arena = e.arena[:0]
}

// EntryID returns the Redis stream entry id, unique per delivery source.
// With Deliveries it lets a plugin be idempotent: auditproc delivers at
// least once.
func (e *Event) EntryID() string { return string(e.in.EntryID) }

// Stream returns the stream the entry was read from.
func (e *Event) Stream() string { return string(e.in.Stream) }

// KeyID returns the id of the key that signed the event.
func (e *Event) KeyID() string { return string(e.in.KeyID) }

// EventID returns the event's own unique id.
func (e *Event) EventID() string { return string(e.in.EventID) }

// Deliveries returns 1 on the first delivery of the entry, more on
// redelivery.
func (e *Event) Deliveries() uint32 { return e.in.Deliveries }

// Bytes returns the event's JSON object text as this plugin sees it now,
// including its own changes. The slice is valid until the handler returns
// and must not be modified.
func (e *Event) Bytes() []byte {
	if !e.changed {
		return e.in.Event
	}
	b, err := e.Get("")
	if err != nil {
		// The host always has the whole event; an error here means
		// the host broke the ABI.
		panic("guest: reading the current event: " + err.Error())
	}
	return b
}

// Get returns the JSON text of the value at path (strings keep their
// quotes), or ErrNotFound. A path is segments separated by "."; see Path for
// names holding dots. The empty path is the whole event. The slice is valid
// until the handler returns.
func (e *Event) Get(path string) ([]byte, error) {
	for {
		start := len(e.arena)
		free := e.arena[start:cap(e.arena)]
		n := hostEventGet(stringPtr(path), int32(len(path)), bytesPtr(free), int32(len(free)))
		if n < 0 {
			return nil, resultErr(n)
		}
		if int(n) <= len(free) {
			e.arena = e.arena[:start+int(n)]
			return e.arena[start : start+int(n) : start+int(n)], nil
		}
		// Too small: continue in a new, larger arena. Slices already
		// returned keep the old one alive until the handler returns.
		e.arena = make([]byte, 0, max(2*cap(e.arena), int(n)))
	}
}

// GetString returns the string at path, unescaped. ok is false when the path
// does not exist or holds something other than a string.
func (e *Event) GetString(path string) (s string, ok bool) {
	v, err := e.Get(path)
	if err != nil || len(v) == 0 || v[0] != '"' {
		return "", false
	}
	s, err = Unquote(v)
	return s, err == nil
}

// Has reports whether path exists in the event.
func (e *Event) Has(path string) bool {
	// A zero-capacity read returns the length without copying anything.
	return hostEventGet(stringPtr(path), int32(len(path)), nil, 0) >= 0
}

// Set stores the JSON value text value at path, creating missing objects on
// the way. ErrInvalid means a malformed path or value.
func (e *Event) Set(path string, value []byte) error {
	r := hostEventSet(stringPtr(path), int32(len(path)), bytesPtr(value), int32(len(value)))
	if r != abi.ResultOK {
		return resultErr(r)
	}
	e.changed = true
	return nil
}

// SetString stores the string s (quoted and escaped here) at path.
func (e *Event) SetString(path, s string) error {
	e.scratch = AppendQuote(e.scratch[:0], s)
	return e.Set(path, e.scratch)
}

// Delete removes the value at path; ErrNotFound when there is none.
func (e *Event) Delete(path string) error {
	r := hostEventDelete(stringPtr(path), int32(len(path)))
	if r != abi.ResultOK {
		return resultErr(r)
	}
	e.changed = true
	return nil
}

// Replace replaces the whole event with b, a JSON object's text, for the
// plugins after this one and for the final result. ErrLimit means b is
// larger than the host allows.
func (e *Event) Replace(b []byte) error {
	r := hostSetEvent(bytesPtr(b), int32(len(b)))
	if r != abi.ResultOK {
		return resultErr(r)
	}
	e.changed = true
	return nil
}

// Emit buffers b, a JSON object's text, for the sink named sink, which must
// be granted to this plugin in plugins.yaml (else ErrNotGranted). Emits are
// committed with the ack only when the whole pipeline ends in ok.
func (e *Event) Emit(sink string, b []byte) error {
	r := hostEmit(stringPtr(sink), int32(len(sink)), bytesPtr(b), int32(len(b)))
	if r != abi.ResultOK {
		return resultErr(r)
	}
	return nil
}
