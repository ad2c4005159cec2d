package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"

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
	if len(b) > abi.DefaultMaxMessageBytes {
		b = b[:abi.DefaultMaxMessageBytes]
	}
	inst.message = append(inst.message[:0], b...)
}

// isObject reports whether b is the text of one JSON object.
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{' && gjson.ValidBytes(b)
}

func hostSetEvent(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	ptr, n := uint32(stack[0]), uint32(stack[1])
	switch {
	case inst.phase != phaseProcess:
		setResult(stack, abi.ErrInvalid)
	case int64(n) > int64(inst.p.spec.MaxEventBytes):
		setResult(stack, abi.ErrLimit)
	default:
		b := inst.read(mod, abi.FuncSetEvent, ptr, n)
		if !isObject(b) {
			setResult(stack, abi.ErrInvalid)
			return
		}
		inst.eventBuf = append(inst.eventBuf[:0], b...)
		inst.event = inst.eventBuf
		setResult(stack, abi.ResultOK)
	}
}

func hostEmit(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	sinkPtr, sinkLen, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	sinkName := inst.read(mod, abi.FuncEmit, sinkPtr, sinkLen)
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
	case len(inst.emits) >= spec.MaxEmits || int64(n) > int64(spec.MaxEmitBytes):
		setResult(stack, abi.ErrLimit)
	default:
		b := inst.read(mod, abi.FuncEmit, ptr, n)
		if !isObject(b) {
			setResult(stack, abi.ErrInvalid)
			return
		}
		inst.emits = append(inst.emits, Emit{Plugin: spec.Name, Sink: sink, Event: bytes.Clone(b)})
		setResult(stack, abi.ResultOK)
	}
}

func hostEventGet(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	pathPtr, pathLen, outPtr, outCap := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	segs, ok := splitPath(inst.read(mod, abi.FuncEventGet, pathPtr, pathLen))
	if !ok {
		setResult(stack, abi.ErrInvalid)
		return
	}
	var raw []byte
	if len(segs) == 0 {
		raw = inst.event
	} else {
		res := gjson.GetBytes(inst.event, getPath(segs))
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

// rawOf returns res's text as a slice of doc when gjson located it there.
func rawOf(doc []byte, res gjson.Result) []byte {
	if res.Index > 0 && res.Index+len(res.Raw) <= len(doc) {
		return doc[res.Index : res.Index+len(res.Raw)]
	}
	return []byte(res.Raw)
}

func hostEventSet(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	pathPtr, pathLen, valPtr, valLen := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	segs, ok := splitPath(inst.read(mod, abi.FuncEventSet, pathPtr, pathLen))
	if !ok {
		setResult(stack, abi.ErrInvalid)
		return
	}
	if int64(valLen) > int64(inst.p.spec.MaxEventBytes) {
		setResult(stack, abi.ErrLimit)
		return
	}
	val := inst.read(mod, abi.FuncEventSet, valPtr, valLen)
	if !gjson.ValidBytes(val) {
		setResult(stack, abi.ErrInvalid)
		return
	}
	var out []byte
	if len(segs) == 0 {
		if !isObject(val) {
			setResult(stack, abi.ErrInvalid)
			return
		}
		out = bytes.Clone(val)
	} else {
		path, ok := setPath(inst.event, segs, true)
		if !ok {
			setResult(stack, abi.ErrInvalid)
			return
		}
		var err error
		if out, err = sjson.SetRawBytes(inst.event, path, val); err != nil {
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
	pathPtr, pathLen := uint32(stack[0]), uint32(stack[1])
	if inst.phase != phaseProcess {
		setResult(stack, abi.ErrInvalid)
		return
	}
	segs, ok := splitPath(inst.read(mod, abi.FuncEventDelete, pathPtr, pathLen))
	if !ok || len(segs) == 0 {
		setResult(stack, abi.ErrInvalid)
		return
	}
	if !gjson.GetBytes(inst.event, getPath(segs)).Exists() {
		setResult(stack, abi.ErrNotFound)
		return
	}
	path, ok := setPath(inst.event, segs, false)
	if !ok {
		setResult(stack, abi.ErrInvalid)
		return
	}
	out, err := sjson.DeleteBytes(inst.event, path)
	if err != nil {
		setResult(stack, abi.ErrInvalid)
		return
	}
	inst.event = out
	setResult(stack, abi.ResultOK)
}
