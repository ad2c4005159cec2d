//go:build wasip1

package guest

import "unsafe"

// The exports of ABI v1. They live in this package, so importing it is
// enough; a package other than main may carry //go:wasmexport.

//go:wasmexport auditproc_abi_v1
func abiV1() {}

//go:wasmexport auditproc_alloc
func alloc(size int32) unsafe.Pointer { return allocInput(int(size)) }

//go:wasmexport auditproc_init
func initExport(ptr unsafe.Pointer, n int32) int32 {
	return runInit(unsafe.Slice((*byte)(ptr), n))
}

//go:wasmexport auditproc_process
func process(ptr unsafe.Pointer, n int32) int32 {
	return runProcess(unsafe.Slice((*byte)(ptr), n))
}
