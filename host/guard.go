package host

import (
	"context"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/auditproc/auditproc/host/internal/meter"
)

// Guard says how a plugin's deadline is kept.
type Guard int

const (
	// GuardMetered: the module is instrumented (host/internal/meter) to
	// check its deadline every few thousand loop iterations and function
	// entries. The default for plugins that are not trusted.
	GuardMetered Guard = iota
	// GuardOff: the plugin is trusted; nothing stops a call that never returns.
	GuardOff
)

func (g Guard) String() string {
	switch g {
	case GuardMetered:
		return "metered"
	case GuardOff:
		return "off"
	}
	return "unknown"
}

// errStopped stops a metered guest: wazero returns a host function's
// *sys.ExitError panic as the call's error.
var errStopped = sys.NewExitError(sys.ExitCodeDeadlineExceeded)

// offerMeter instantiates the host module a metered guest calls to check
// its deadline.
func offerMeter(ctx context.Context, rt wazero.Runtime) error {
	_, err := rt.NewHostModuleBuilder(meter.ImportModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(meterTick), nil, nil).
		Export(meter.ImportName).
		Instantiate(ctx)
	return err
}

// meterTick runs every meterPeriod metered points of a guest: it stops the
// call when it is past its deadline or its instance was cancelled (the
// ticker found it overdue, or the plugin is closing).
func meterTick(ctx context.Context, _ api.Module, _ []uint64) {
	if inst := instanceFrom(ctx); inst != nil {
		inst.checkDeadline()
	}
}

// hostWorkPeriod is how many bytes of host work (copied, scanned, validated
// or generated for the guest) a host function does between two checks of the
// running call's deadline.
const hostWorkPeriod = 64 << 10

// charge counts n bytes of host work for the running call and checks its
// deadline whenever the work since the last check reaches hostWorkPeriod. A
// host function calls it before the work, in steps of at most
// hostWorkPeriod, so a call that asks the host for unbounded work is
// stopped at its deadline like a guest loop.
func (inst *instance) charge(n int) {
	inst.work += uint64(n)
	if inst.work >= hostWorkPeriod {
		inst.work = 0
		inst.checkDeadline()
	}
}

// checkDeadline stops the running call, on the goroutine running it, when
// it is past its deadline or its instance was cancelled (the ticker found
// it overdue, or the plugin is closing). Trusted plugins have no deadline.
func (inst *instance) checkDeadline() {
	if inst.p.spec.Trusted {
		return
	}
	inst.expire(inst.p.now())
	if inst.ctx.Err() != nil {
		panic(errStopped)
	}
}
