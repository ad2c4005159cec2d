package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"unicode/utf8"
	"unsafe"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/auditproc/auditproc/abi"
)

// hostModule builds the auditproc host module. Every function finds its
// instance through the call's context (set once per instance) and traps the
// guest, through a panic wazero turns into the call's error, when a pointer
// range is outside the guest's memory.
func hostModule(rt wazero.Runtime) wazero.HostModuleBuilder {
	b := rt.NewHostModuleBuilder(abi.Module)
	fn := func(name string, f api.GoModuleFunc, params, results int) {
		ps := make([]api.ValueType, params)
		rs := make([]api.ValueType, results)
		for i := range ps {
			ps[i] = api.ValueTypeI32
		}
		for i := range rs {
			rs[i] = api.ValueTypeI32
		}
		b.NewFunctionBuilder().WithGoModuleFunction(f, ps, rs).Export(name)
	}
	fn(abi.FuncLog, hostLog, 3, 0)
	fn(abi.FuncSetMessage, hostSetMessage, 2, 0)
	fn(abi.FuncSetEvent, hostSetEvent, 2, 1)
	fn(abi.FuncEmit, hostEmit, 4, 1)
	fn(abi.FuncEventGet, hostEventGet, 4, 1)
	fn(abi.FuncEventSet, hostEventSet, 4, 1)
	fn(abi.FuncEventDelete, hostEventDelete, 2, 1)
	return b
}

// guestError traps the guest: the host function panics with it and wazero
// returns it as the call's error.
type guestError struct{ msg string }

func (e *guestError) Error() string { return e.msg }

func (inst *instance) trapf(format string, args ...any) {
	err := &guestError{fmt.Sprintf(format, args...)}
	inst.fault = err
	panic(err)
}

// read returns the guest's bytes [ptr, ptr+n), trapping when out of range.
// It charges nothing: the caller charges for what it does with them.
func (inst *instance) read(mod api.Module, fn string, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		inst.trapf("%s: range [%d, %d+%d) is outside the guest's %d-byte memory", fn, ptr, ptr, n, mod.Memory().Size())
	}
	return b
}

func mustInstance(ctx context.Context) *instance {
	inst := instanceFrom(ctx)
	if inst == nil {
		panic("auditproc host function called outside an auditproc instance")
	}
	return inst
}

func setResult(stack []uint64, r int32) { stack[0] = uint64(uint32(r)) }

func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	b := inst.read(mod, abi.FuncLog, ptr, n)
	// Only the first abi.DefaultMaxLogBytes are looked at.
	inst.charge(min(len(b), abi.DefaultMaxLogBytes))
	var l slog.Level
	switch abi.LogLevel(level) {
	case abi.LogDebug:
		l = slog.LevelDebug
	case abi.LogInfo:
		l = slog.LevelInfo
	case abi.LogWarn:
		l = slog.LevelWarn
	default:
		l = slog.LevelError
	}
	inst.p.logLine(ctx, l, "log", b)
}

func hostSetMessage(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	b := inst.read(mod, abi.FuncSetMessage, uint32(stack[0]), uint32(stack[1]))
	b = truncateUTF8(b, abi.DefaultMaxMessageBytes)
	inst.charge(len(b))
	inst.message = append(inst.message[:0], b...)
}

// truncateUTF8 returns b cut to at most n bytes, never inside a UTF-8
// sequence.
func truncateUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	// Back off over at most three continuation bytes to the start of the
	// character that does not fit.
	cut := n
	for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(b[cut]); i++ {
		cut--
	}
	if !utf8.RuneStart(b[cut]) { // no character starts nearby: invalid text anyway
		cut = n
	}
	return b[:cut]
}

func hostSetEvent(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	b := inst.read(mod, abi.FuncSetEvent, uint32(stack[0]), uint32(stack[1]))
	switch {
	case inst.phase != phaseProcess:
		setResult(stack, abi.ErrInvalid)
	case len(b) > inst.p.spec.MaxEventBytes:
		setResult(stack, abi.ErrLimit)
	case !inst.chargedValidObject(b):
		setResult(stack, abi.ErrInvalid)
	default:
		inst.eventBuf = append(inst.eventBuf[:0], b...)
		inst.event = inst.eventBuf
		setResult(stack, abi.ResultOK)
	}
}

// chargedValidObject charges for validating b, which the caller has bounded
// by a size limit, and reports whether it is one JSON object's text (valid
// UTF-8, nested at most maxJSONDepth deep). It also charges for the copy the
// caller makes of a valid b.
func (inst *instance) chargedValidObject(b []byte) bool {
	inst.charge(2 * len(b))
	return validObject(b)
}

func hostEmit(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	sinkName := inst.read(mod, abi.FuncEmit, uint32(stack[0]), uint32(stack[1]))
	b := inst.read(mod, abi.FuncEmit, uint32(stack[2]), uint32(stack[3]))
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	sink := ""
	for _, s := range inst.p.spec.Sinks {
		if s == string(sinkName) {
			sink = s
			break
		}
	}
	spec := &inst.p.spec
	switch {
	case sink == "":
		setResult(stack, abi.ErrNotGranted)
	case len(inst.emits) >= spec.MaxEmits || len(b) > spec.MaxEmitBytes:
		setResult(stack, abi.ErrLimit)
	case !inst.chargedValidObject(b):
		setResult(stack, abi.ErrInvalid)
	default:
		inst.emits = append(inst.emits, Emit{Plugin: spec.Name, Sink: sink, Event: bytes.Clone(b)})
		setResult(stack, abi.ResultOK)
	}
}

func hostEventGet(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	path := inst.read(mod, abi.FuncEventGet, uint32(stack[0]), uint32(stack[1]))
	outPtr, outCap := uint32(stack[2]), uint32(stack[3])
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	// The lookup may scan the whole event and the path, and copies out at
	// most the event.
	inst.charge(2*len(inst.event) + len(path))
	var gpath string
	if simplePath(path) {
		gpath = view(path)
	} else {
		segs, ok := splitPath(path)
		if !ok {
			setResult(stack, abi.ErrInvalid)
			return
		}
		gpath = getPath(segs)
	}
	var raw []byte
	if gpath == "" {
		raw = inst.event
	} else {
		// gjson.GetBytes would copy what it finds; the host needs only
		// where it is.
		res := gjson.Get(view(inst.event), gpath)
		if !res.Exists() {
			setResult(stack, abi.ErrNotFound)
			return
		}
		raw = rawOf(inst.event, res)
	}
	if uint64(len(raw)) <= uint64(outCap) && !mod.Memory().Write(outPtr, raw) {
		inst.trapf("%s: output range [%d, %d+%d) is outside the guest's %d-byte memory", abi.FuncEventGet, outPtr, outPtr, len(raw), mod.Memory().Size())
	}
	setResult(stack, int32(len(raw)))
}

// view returns b's bytes as a string without copying them, for lookups
// that do not keep the string: b (the call's event, or the guest's path
// argument) does not change while a host function runs.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// rawOf returns res's text as a slice of doc when gjson located it there.
func rawOf(doc []byte, res gjson.Result) []byte {
	if res.Index > 0 && res.Index+len(res.Raw) <= len(doc) {
		return doc[res.Index : res.Index+len(res.Raw)]
	}
	return []byte(res.Raw)
}

func hostEventSet(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	path := inst.read(mod, abi.FuncEventSet, uint32(stack[0]), uint32(stack[1]))
	val := inst.read(mod, abi.FuncEventSet, uint32(stack[2]), uint32(stack[3]))
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	if len(val) > inst.p.spec.MaxEventBytes {
		setResult(stack, abi.ErrLimit)
		return
	}
	// Splitting the path, validating val, then building the new event from
	// the old one and val.
	inst.charge(2*len(path) + 2*len(val) + len(inst.event))
	segs, ok := splitPath(path)
	// The value goes len(segs) levels below the event's top level.
	if !ok || len(segs) >= maxJSONDepth || !validJSON(val, maxJSONDepth-len(segs)) {
		setResult(stack, abi.ErrInvalid)
		return
	}
	var out []byte
	if len(segs) == 0 {
		if !validObject(val) {
			setResult(stack, abi.ErrInvalid)
			return
		}
		out = bytes.Clone(val)
	} else {
		spath, ok := setPath(inst.event, segs, true)
		if !ok {
			setResult(stack, abi.ErrInvalid)
			return
		}
		var err error
		if out, err = sjson.SetRawBytes(inst.event, spath, val); err != nil {
			setResult(stack, abi.ErrInvalid)
			return
		}
	}
	if len(out) > inst.p.spec.MaxEventBytes {
		setResult(stack, abi.ErrLimit)
		return
	}
	inst.event = out
	setResult(stack, abi.ResultOK)
}

func hostEventDelete(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	path := inst.read(mod, abi.FuncEventDelete, uint32(stack[0]), uint32(stack[1]))
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	// Splitting the path, a lookup and a rewrite of the event.
	inst.charge(2*len(path) + 2*len(inst.event))
	segs, ok := splitPath(path)
	if !ok || len(segs) == 0 {
		setResult(stack, abi.ErrInvalid)
		return
	}
	if !gjson.GetBytes(inst.event, getPath(segs)).Exists() {
		setResult(stack, abi.ErrNotFound)
		return
	}
	spath, ok := setPath(inst.event, segs, false)
	if !ok {
		setResult(stack, abi.ErrInvalid)
		return
	}
	out, err := sjson.DeleteBytes(inst.event, spath)
	if err != nil {
		setResult(stack, abi.ErrInvalid)
		return
	}
	inst.event = out
	setResult(stack, abi.ResultOK)
}
