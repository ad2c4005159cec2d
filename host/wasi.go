package host

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// WASI errno values (wasi_snapshot_preview1).
const (
	wasiSuccess = 0
	wasiEBADF   = 8
	wasiEFAULT  = 21
	wasiEINVAL  = 28
	wasiENOTDIR = 54
	wasiENOTSUP = 58
	wasiESPIPE  = 70
)

// maxIOVecs caps the iovecs of one fd_read, fd_write, fd_pread or fd_pwrite
// call, as POSIX's IOV_MAX does (1024 on Linux); more is EINVAL.
const maxIOVecs = 1024

// maxSubscriptions caps the subscriptions of one poll_oneoff call; more is
// EINVAL. The Go runtime and wasi-libc poll one clock and a few descriptors.
const maxSubscriptions = 1024

// wasiModuleBuilder is wazero's WASI with the functions a plugin could make
// the host work for without bound replaced by ones that charge their work
// to the running call (instance.charge) and cap their counts:
//   - fd_write, fd_read, fd_pread, fd_pwrite: at most maxIOVecs iovecs;
//     writes go to the instance's stdout and stderr in steps of
//     hostWorkPeriod bytes; stdin is empty; no other descriptor exists.
//   - random_get: filled in steps of hostWorkPeriod bytes.
//   - poll_oneoff: at most maxSubscriptions subscriptions; never sleeps
//     (plugins get no real sleep: a sleeping guest could not be stopped).
//   - path_*: a plugin has no file system, so these fail before reading
//     the path (wazero would copy and clean it first).
//
// The other WASI functions do a bounded amount of work per call.
func wasiModuleBuilder(ctx context.Context, rt wazero.Runtime) (wazero.HostModuleBuilder, error) {
	b := rt.NewHostModuleBuilder(wasiModule)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	// The signatures to keep, from wazero's own definitions.
	std, err := b.Compile(ctx)
	if err != nil {
		return nil, err
	}
	defs := std.ExportedFunctions()
	defer std.Close(ctx)
	override := func(name string, f api.GoModuleFunc) error {
		def, ok := defs[name]
		if !ok {
			return fmt.Errorf("host: wazero's WASI has no %s", name)
		}
		b.NewFunctionBuilder().WithGoModuleFunction(f, def.ParamTypes(), def.ResultTypes()).Export(name)
		return nil
	}
	overrides := map[string]api.GoModuleFunc{
		"fd_write":    wasiFdWrite,
		"fd_pwrite":   wasiFdPwrite,
		"fd_read":     wasiFdRead,
		"fd_pread":    wasiFdPread,
		"random_get":  wasiRandomGet,
		"poll_oneoff": wasiPollOneoff,
	}
	for name := range defs {
		if strings.HasPrefix(name, "path_") {
			overrides[name] = wasiNoPath
		}
	}
	for name, f := range overrides {
		if err := override(name, f); err != nil {
			return nil, err
		}
	}
	return b, nil
}

const (
	fdStdin  = 0
	fdStdout = 1
	fdStderr = 2
)

// iovecs returns the iovec array of a read or write call, or the WASI errno
// that refuses it.
func iovecs(inst *instance, mem api.Memory, ptr, count uint32) ([]byte, uint32) {
	if count > maxIOVecs {
		return nil, wasiEINVAL
	}
	inst.charge(int(count) * 8)
	b, ok := mem.Read(ptr, count*8)
	if !ok {
		return nil, wasiEFAULT
	}
	return b, wasiSuccess
}

func wasiFdWrite(ctx context.Context, mod api.Module, stack []uint64) {
	fd, iovs, count, resultN := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	stack[0] = uint64(fdWrite(mustInstance(ctx), mod, fd, iovs, count, resultN))
}

func wasiFdPwrite(ctx context.Context, mod api.Module, stack []uint64) {
	fd, iovs, count := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
	if fd > fdStderr {
		stack[0] = wasiEBADF
		return
	}
	// The standard streams cannot seek; check the iovecs all the same.
	if _, errno := iovecs(mustInstance(ctx), mod.Memory(), iovs, count); errno != wasiSuccess {
		stack[0] = uint64(errno)
		return
	}
	stack[0] = wasiESPIPE
}

func fdWrite(inst *instance, mod api.Module, fd, iovs, count, resultN uint32) uint32 {
	var w *lineWriter
	switch fd {
	case fdStdout:
		w = inst.stdout
	case fdStderr:
		w = inst.stderr
	default:
		return wasiEBADF
	}
	mem := mod.Memory()
	vecs, errno := iovecs(inst, mem, iovs, count)
	if errno != wasiSuccess {
		return errno
	}
	var n uint32
	for i := range count {
		off, l := binary.LittleEndian.Uint32(vecs[i*8:]), binary.LittleEndian.Uint32(vecs[i*8+4:])
		b, ok := mem.Read(off, l)
		if !ok {
			return wasiEFAULT
		}
		for len(b) > 0 {
			step := b[:min(len(b), hostWorkPeriod)]
			inst.charge(len(step))
			_, _ = w.Write(step)
			b = b[len(step):]
		}
		n += l
	}
	if !mem.WriteUint32Le(resultN, n) {
		return wasiEFAULT
	}
	return wasiSuccess
}

func wasiFdRead(ctx context.Context, mod api.Module, stack []uint64) {
	fd, iovs, count, resultN := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	stack[0] = uint64(fdRead(mustInstance(ctx), mod, fd, iovs, count, resultN, false))
}

func wasiFdPread(ctx context.Context, mod api.Module, stack []uint64) {
	fd, iovs, count, resultN := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[4])
	stack[0] = uint64(fdRead(mustInstance(ctx), mod, fd, iovs, count, resultN, true))
}

// fdRead reads from stdin, which is always at its end: 0 bytes.
func fdRead(inst *instance, mod api.Module, fd, iovs, count, resultN uint32, positioned bool) uint32 {
	if fd > fdStderr {
		return wasiEBADF
	}
	mem := mod.Memory()
	if _, errno := iovecs(inst, mem, iovs, count); errno != wasiSuccess {
		return errno
	}
	switch {
	case fd != fdStdin:
		return wasiEBADF
	case positioned:
		return wasiESPIPE
	}
	if !mem.WriteUint32Le(resultN, 0) {
		return wasiEFAULT
	}
	return wasiSuccess
}

func wasiRandomGet(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	b, ok := mod.Memory().Read(uint32(stack[0]), uint32(stack[1]))
	if !ok {
		stack[0] = wasiEFAULT
		return
	}
	for len(b) > 0 {
		step := b[:min(len(b), hostWorkPeriod)]
		inst.charge(len(step))
		_, _ = rand.Read(step) // crypto/rand.Read never fails
		b = b[len(step):]
	}
	stack[0] = wasiSuccess
}

// Subscription and event layouts of poll_oneoff.
const (
	subscriptionSize = 48
	eventSize        = 32
	eventClock       = 0
	eventFdRead      = 1
	eventFdWrite     = 2
)

// wasiPollOneoff answers every subscription at once: clocks (relative
// only) as expired, since a plugin gets no real sleep; reading stdin as
// ready (at its end); writing to stdout or stderr as not supported, as
// wazero does; any other descriptor as EBADF.
func wasiPollOneoff(ctx context.Context, mod api.Module, stack []uint64) {
	inst := mustInstance(ctx)
	in, out, n, resultN := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	stack[0] = uint64(pollOneoff(inst, mod.Memory(), in, out, n, resultN))
}

func pollOneoff(inst *instance, mem api.Memory, in, out, n, resultN uint32) uint32 {
	if n == 0 || n > maxSubscriptions {
		return wasiEINVAL
	}
	inst.charge(int(n) * (subscriptionSize + eventSize))
	subs, ok := mem.Read(in, n*subscriptionSize)
	if !ok {
		return wasiEFAULT
	}
	events, ok := mem.Read(out, n*eventSize)
	if !ok {
		return wasiEFAULT
	}
	le := binary.LittleEndian
	// Check every subscription before writing any event: the output may
	// overlap the input.
	for i := range n {
		sub := subs[i*subscriptionSize:]
		switch sub[8] {
		case eventClock:
			switch le.Uint16(sub[40:]) { // subclockflags
			case 0:
			case 1: // abstime
				return wasiENOTSUP
			default:
				return wasiEINVAL
			}
		case eventFdRead, eventFdWrite:
			if int32(le.Uint32(sub[16:])) < 0 {
				return wasiEBADF
			}
		default:
			return wasiEINVAL
		}
	}
	type answer struct {
		userdata uint64
		errno    uint16
		kind     byte
	}
	answers := make([]answer, n)
	for i := range n {
		sub := subs[i*subscriptionSize:]
		a := answer{userdata: le.Uint64(sub), kind: sub[8]}
		if a.kind != eventClock {
			switch fd := le.Uint32(sub[16:]); {
			case fd > fdStderr:
				a.errno = wasiEBADF
			case a.kind == eventFdWrite:
				a.errno = wasiENOTSUP
			}
		}
		answers[i] = a
	}
	clear(events)
	for i, a := range answers {
		ev := events[i*eventSize:]
		le.PutUint64(ev, a.userdata)
		le.PutUint16(ev[8:], a.errno)
		ev[10] = a.kind
	}
	if !mem.WriteUint32Le(resultN, n) {
		return wasiEFAULT
	}
	return wasiSuccess
}

// wasiNoPath answers every path_* call: descriptors 0 to 2 are no
// directories, and there is no other.
func wasiNoPath(_ context.Context, _ api.Module, stack []uint64) {
	if fd := uint32(stack[0]); fd <= fdStderr {
		stack[0] = wasiENOTDIR
	} else {
		stack[0] = wasiEBADF
	}
}
