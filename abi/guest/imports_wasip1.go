//go:build wasip1

package guest

import "unsafe"

// The host functions of ABI v1, import module "auditproc". Pointers are
// offsets into this module's memory; the host reads or writes them during
// the call only.

//go:wasmimport auditproc log
func hostLog(level int32, ptr unsafe.Pointer, n int32)

//go:wasmimport auditproc set_message
func hostSetMessage(ptr unsafe.Pointer, n int32)

//go:wasmimport auditproc set_event
func hostSetEvent(ptr unsafe.Pointer, n int32) int32

//go:wasmimport auditproc emit
func hostEmit(sinkPtr unsafe.Pointer, sinkLen int32, ptr unsafe.Pointer, n int32) int32

//go:wasmimport auditproc event_get
func hostEventGet(pathPtr unsafe.Pointer, pathLen int32, outPtr unsafe.Pointer, outCap int32) int32

//go:wasmimport auditproc event_set
func hostEventSet(pathPtr unsafe.Pointer, pathLen int32, valPtr unsafe.Pointer, valLen int32) int32

//go:wasmimport auditproc event_delete
func hostEventDelete(pathPtr unsafe.Pointer, pathLen int32) int32
