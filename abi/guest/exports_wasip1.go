//go:build wasip1

package guest

import "unsafe"

// The exports of ABI v1. They live in this package, so importing it is
// enough; a package other than main may carry //go:wasmexport.

//lint:ignore U1000 the host calls it: //go:wasmexport
//go:wasmexport auditproc_abi_v1
func abiV1() {}

//lint:ignore U1000 the host calls it: //go:wasmexport
//go:wasmexport auditproc_alloc
func alloc(size int32) unsafe.Pointer { return allocInput(int(size)) }

// The input buffer is only ever replaced by a larger one in allocInput, so
// the host may write a record no larger than the last one where it wrote
// that one, without calling auditproc_alloc: one guest call per event
// instead of two.
//
//lint:ignore U1000 the host calls it: //go:wasmexport
//go:wasmexport auditproc_alloc_reuse
func allocReuse() {}

//lint:ignore U1000 the host calls it: //go:wasmexport
//go:wasmexport auditproc_init
func initExport(ptr unsafe.Pointer, n int32) int32 {
	return runInit(unsafe.Slice((*byte)(ptr), n))
}

//lint:ignore U1000 the host calls it: //go:wasmexport
//go:wasmexport auditproc_process
func process(ptr unsafe.Pointer, n int32) int32 {
	return runProcess(unsafe.Slice((*byte)(ptr), n))
}
