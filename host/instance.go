package host

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/auditproc/auditproc/abi"
)

type phase uint8

const (
	phaseIdle phase = iota
	phaseInit
	phaseProcess
)

// instance is one module instance and the state of the call running in it.
// Only the worker holding it touches it, except state, deadline and cancel,
// which the deadline ticker uses.
type instance struct {
	p     *Plugin
	mod   api.Module
	mem   api.Memory
	alloc api.Function
	proc  api.Function
	init  api.Function // nil when not exported

	// ctx is made once per instance, not per call, and is what wazero
	// watches when the deadline guard is on: the ticker cancels it when the
	// running call is overdue. Host functions find the instance through it.
	// It is no caller's context, so storing it does not outlive a request.
	ctx    context.Context
	cancel context.CancelFunc

	// state is seq<<2 | running(1) or killed(2); the worker moves it from
	// idle to running and back, the ticker from running to killed.
	state    atomic.Uint64
	deadline atomic.Int64 // p.now() value after which the running call is killed
	seq      uint64

	// With the auditproc_alloc_reuse marker, the region auditproc_alloc last
	// returned is reused for inputs that fit.
	reuse     bool
	regionPtr uint32
	regionLen uint32

	memory  *guestMemory // nil until wazero allocates it
	stack   [2]uint64
	work    uint64 // host work since the last deadline check, see charge
	events  int
	baseMem uint32
	stdout  *lineWriter
	stderr  *lineWriter
	fault   error // why a host function trapped the guest
	closed  bool
	timeout time.Duration // of the running call, for the message when it is killed

	// Per call.
	phase    phase
	event    []byte // the current event
	eventBuf []byte // set_event's copy
	message  []byte
	emits    []Emit
}

type instanceKey struct{}

func instanceFrom(ctx context.Context) *instance {
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	return inst
}

// newInstance instantiates the module, runs _initialize and auditproc_init.
func (p *Plugin) newInstance(ctx context.Context) (*instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inst := &instance{p: p}
	base, cancel := context.WithCancel(context.Background())
	inst.ctx = context.WithValue(inst.withMemory(base), instanceKey{}, inst)
	inst.cancel = cancel
	inst.stdout = &lineWriter{p: p, stream: "stdout"}
	inst.stderr = &lineWriter{p: p, stream: "stderr"}
	if !p.register(inst) {
		cancel()
		return nil, &PluginError{Plugin: p.spec.Name, Err: ErrClosed}
	}
	p.created.Add(1)

	inst.begin(ctx, p.now(), p.spec.InitDeadline)
	inst.phase = phaseInit
	if err := inst.initialize(); err != nil {
		inst.close(-1)
		return nil, err
	}
	inst.phase = phaseIdle
	inst.message = inst.message[:0]
	return inst, nil
}

// initStartSection names the module's start function (the Wasm start
// section, which runs as the module is instantiated) in errors.
const initStartSection = "the start function"

// initialize instantiates the module (running its start function), then
// calls _initialize and auditproc_init when exported, all within the
// running call's deadline (begin was called). An error names the step that
// failed, and a module that closed itself (proc_exit, even with code 0) is
// refused: it could process no event.
func (inst *instance) initialize() error {
	p := inst.p
	step := initStartSection
	fail := func(err error) error {
		killed := !inst.end(p.now())
		return inStep(step, inst.classify(err, killed))
	}
	mod, err := p.rt.InstantiateModule(inst.ctx, p.module, p.modCfg.WithStdout(inst.stdout).WithStderr(inst.stderr))
	if err != nil {
		// wazero keeps no module that failed to instantiate, and so
		// never frees a memory it made for it.
		if inst.memory != nil {
			inst.memory.Free()
		}
		return fail(err)
	}
	inst.mod = mod
	inst.mem = mod.ExportedMemory(abi.ExportMemory)
	inst.alloc = mod.ExportedFunction(abi.ExportAlloc)
	inst.proc = mod.ExportedFunction(abi.ExportProcess)
	inst.init = mod.ExportedFunction(abi.ExportInit)
	inst.baseMem = inst.mem.Size()
	inst.reuse = mod.ExportedFunction(abi.ExportAllocReuse) != nil

	if initialize := mod.ExportedFunction(abi.ExportInitialize); initialize != nil {
		step = abi.ExportInitialize
		if err := initialize.CallWithStack(inst.ctx, nil); err != nil || mod.IsClosed() {
			return fail(inst.exited(err))
		}
	}
	status := uint64(0)
	if inst.init != nil {
		step = abi.ExportAlloc
		ptr, n, err := inst.put(p.spec.Config)
		if err == nil && !mod.IsClosed() {
			step = abi.ExportInit
			inst.stack[0], inst.stack[1] = uint64(ptr), uint64(n)
			err = inst.init.CallWithStack(inst.ctx, inst.stack[:])
			status = inst.stack[0]
		}
		if err != nil || mod.IsClosed() {
			return fail(inst.exited(err))
		}
	}
	if !inst.end(p.now()) {
		// Every step returned, the last past the deadline.
		return inStep(step, inst.classify(nil, true))
	}
	if int32(status) != 0 {
		msg := string(inst.message)
		if msg == "" {
			msg = "no message"
		}
		return fmt.Errorf("%w: %s returned %d: %s", ErrInitRefused, abi.ExportInit, int32(status), msg)
	}
	return nil
}

// inStep names the export (or the start function) whose call failed with
// err; ErrGuestMemory errors name auditproc_alloc already.
func inStep(step string, err error) error {
	if errors.Is(err, ErrGuestMemory) {
		return err
	}
	return fmt.Errorf("%s: %w", step, err)
}

// exited is err, or for a call that returned with its module closed, the
// exit that closed it.
func (inst *instance) exited(err error) error {
	if err == nil {
		return fmt.Errorf("%w: the module closed itself", ErrExit)
	}
	return err
}

// begin marks a call as running with its deadline: timeout from now, or
// ctx's deadline when that is sooner. now is a p.now() value.
func (inst *instance) begin(ctx context.Context, now int64, timeout time.Duration) {
	d := now + int64(timeout)
	if dl, ok := ctx.Deadline(); ok {
		if at := int64(dl.Sub(inst.p.epoch)); at < d {
			d = at
		}
	}
	inst.timeout = time.Duration(d - now)
	inst.seq++
	inst.deadline.Store(d)
	inst.state.Store(inst.seq<<2 | 1)
}

// end marks the call as finished and reports whether it kept its deadline:
// it was not killed, and it did not return past its deadline.
//
// The second test is the worker's own and does not wait for the ticker: a
// guest running compiled code cannot be preempted by the Go scheduler, so
// while a garbage collection waits to stop the world for it, every other
// goroutine (the ticker too) stands still, and the call can return and be
// ended before the ticker has run once. A call that overran is a deadline
// failure however it returned.
//
// now is a p.now() value read after the call returned.
func (inst *instance) end(now int64) bool {
	if !inst.state.CompareAndSwap(inst.seq<<2|1, inst.seq<<2) {
		return false
	}
	return inst.p.spec.Trusted || now <= inst.deadline.Load()
}

// expire kills the running call when it is past its deadline (ticker side).
func (inst *instance) expire(now int64) {
	s := inst.state.Load()
	if s&3 != 1 || now < inst.deadline.Load() {
		return
	}
	if inst.state.CompareAndSwap(s, s&^3|2) {
		inst.cancel()
	}
}

// region returns n bytes of guest memory for the host to write: the last
// region when the guest allows its reuse and it is large enough, otherwise
// a new one from auditproc_alloc.
func (inst *instance) region(n uint32) ([]byte, uint32, error) {
	ptr := inst.regionPtr
	if !inst.reuse || ptr == 0 || n > inst.regionLen {
		inst.stack[0] = uint64(n)
		if err := inst.alloc.CallWithStack(inst.ctx, inst.stack[:]); err != nil {
			return nil, 0, err
		}
		ptr = uint32(inst.stack[0])
		inst.regionPtr, inst.regionLen = 0, 0
	}
	view, ok := inst.mem.Read(ptr, n)
	if ptr == 0 || !ok {
		return nil, 0, inst.guestMemory(ptr, n)
	}
	if inst.reuse {
		inst.regionPtr, inst.regionLen = ptr, max(n, inst.regionLen)
	}
	return view, ptr, nil
}

// put copies b into a region of guest memory.
func (inst *instance) put(b []byte) (ptr, n uint32, err error) {
	view, ptr, err := inst.region(uint32(len(b)))
	if err != nil {
		return 0, 0, err
	}
	copy(view, b)
	return ptr, uint32(len(b)), nil
}

func (inst *instance) guestMemory(ptr, n uint32) error {
	if ptr == 0 {
		return fmt.Errorf("%w: %s(%d) returned 0", ErrGuestMemory, abi.ExportAlloc, n)
	}
	return fmt.Errorf("%w: %s(%d) returned %d, outside the guest's %d-byte memory", ErrGuestMemory, abi.ExportAlloc, n, ptr, inst.mem.Size())
}

// classify turns a failed call into an error wrapping one of the cause
// sentinels.
//
// killed says the call was stopped or returned past its deadline: that is
// a deadline failure, unless the guest had trapped on its own (a trap
// names what went wrong; an exit or a stop does not).
func (inst *instance) classify(err error, killed bool) error {
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	switch {
	case killed && (err == nil || isExit):
		return fmt.Errorf("%w of %s", ErrDeadline, inst.timeout)
	case errors.Is(err, ErrGuestMemory):
		return err
	case inst.fault != nil:
		return fmt.Errorf("%w: %w", ErrTrap, inst.fault)
	case isExit:
		if inst.p.isClosed() {
			return ErrClosed
		}
		return fmt.Errorf("%w with code %d", ErrExit, exit.ExitCode())
	case err == nil:
		return nil
	}
	return fmt.Errorf("%w: %w", ErrTrap, err)
}

func causeOf(err error) Cause {
	switch {
	case errors.Is(err, ErrDeadline):
		return CauseDeadline
	case errors.Is(err, ErrExit):
		return CauseExit
	case errors.Is(err, ErrInvalidVerdict):
		return CauseInvalidVerdict
	case errors.Is(err, ErrGuestMemory):
		return CauseGuestMemory
	}
	return CauseTrap
}

// close closes the instance; cause < 0 is not counted as a restart.
func (inst *instance) close(cause Cause) {
	if inst.closed {
		return
	}
	inst.closed = true
	if cause >= 0 {
		inst.p.restarts[cause].Add(1)
	}
	inst.p.unregister(inst)
	inst.cancel()
	if inst.mod != nil {
		_ = inst.mod.Close(context.Background())
	}
	if inst.memory != nil {
		inst.memory.release()
	}
	inst.stdout.flush()
	inst.stderr.flush()
}

func (p *Plugin) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// inputSize is the size of the input record for ev with the event cur.
func inputSize(ev *Event, cur []byte) int {
	return abi.InputHeaderSize + len(ev.EntryID) + len(ev.Stream) + len(ev.KeyID) + len(ev.EventID) + len(cur)
}

// putInput writes the input record (see abi.AppendInput) into dst, which
// has exactly inputSize bytes.
func putInput(dst []byte, ev *Event, cur []byte) {
	le := binary.LittleEndian
	le.PutUint32(dst[0:], ev.Deliveries)
	le.PutUint32(dst[4:], uint32(len(ev.EntryID)))
	le.PutUint32(dst[8:], uint32(len(ev.Stream)))
	le.PutUint32(dst[12:], uint32(len(ev.KeyID)))
	le.PutUint32(dst[16:], uint32(len(ev.EventID)))
	le.PutUint32(dst[20:], uint32(len(cur)))
	o := abi.InputHeaderSize
	o += copy(dst[o:], ev.EntryID)
	o += copy(dst[o:], ev.Stream)
	o += copy(dst[o:], ev.KeyID)
	o += copy(dst[o:], ev.EventID)
	copy(dst[o:], cur)
}

// outcome is the result of one plugin's call.
type outcome struct {
	verdict abi.Verdict
	event   []byte
	err     error // why the host imposed the verdict; the instance is gone when set
	discard bool
	end     time.Time // when the call returned; zero when none was made
}

// process runs auditproc_process on one event whose current text is cur;
// start is when the call starts (the clock is read once per plugin).
func (inst *instance) process(ctx context.Context, ev *Event, cur []byte, start time.Time) outcome {
	spec := &inst.p.spec
	if len(cur) > spec.MaxEventBytes {
		return outcome{verdict: abi.VerdictReject, err: fmt.Errorf("%w: %d bytes, the limit is %d", ErrEventTooLarge, len(cur), spec.MaxEventBytes)}
	}
	n := uint32(inputSize(ev, cur))
	inst.fault = nil
	inst.message = inst.message[:0]
	inst.emits = inst.emits[:0]
	inst.event = cur
	inst.begin(ctx, int64(start.Sub(inst.p.epoch)), spec.Deadline)

	step := abi.ExportAlloc
	view, ptr, err := inst.region(n)
	if err == nil {
		step = abi.ExportProcess
		putInput(view, ev, cur)
		inst.phase = phaseProcess
		inst.stack[0], inst.stack[1] = uint64(ptr), uint64(n)
		err = inst.proc.CallWithStack(inst.ctx, inst.stack[:])
		inst.phase = phaseIdle
	}
	// The clock is read once, for the deadline and for the caller's timing.
	end := time.Now()
	killed := !inst.end(int64(end.Sub(inst.p.epoch)))
	if err != nil || killed {
		// Killed even when the call finished as the ticker fired: its
		// context is cancelled, so the instance cannot be used again.
		err = inst.classify(err, killed)
		if step == abi.ExportAlloc {
			err = inStep(step, err)
		}
		return outcome{verdict: abi.VerdictRetry, err: err, discard: true, end: end}
	}
	v := abi.Verdict(int32(uint32(inst.stack[0])))
	if !v.Valid() {
		return outcome{verdict: abi.VerdictRetry, err: fmt.Errorf("%w: invalid verdict %d", ErrInvalidVerdict, int32(v)), discard: true, end: end}
	}
	inst.events++
	return outcome{verdict: v, event: inst.event, end: end}
}

// recycleCause reports whether a healthy instance should be replaced.
func (inst *instance) recycleCause() (Cause, bool) {
	spec := &inst.p.spec
	if inst.events >= spec.MaxEventsPerInstance {
		return CauseMaxEvents, true
	}
	if uint64(inst.mem.Size()-inst.baseMem) > spec.MaxMemoryGrowthBytes {
		return CauseMemoryGrowth, true
	}
	return 0, false
}
