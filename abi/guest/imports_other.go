//go:build !wasip1

package guest

//lint:file-ignore U1000 stand-ins of host functions, some of which only the wasip1 runtime calls

import "unsafe"

// Outside a wasip1 build there is no host: these stand-ins let plugin code
// compile natively (go vet ./..., tests of pure helpers) and panic if called.

const noHost = "guest: auditproc host functions exist only in a GOOS=wasip1 build"

func hostLog(int32, unsafe.Pointer, int32)                            { panic(noHost) }
func hostSetMessage(unsafe.Pointer, int32)                            { panic(noHost) }
func hostSetEvent(unsafe.Pointer, int32) int32                        { panic(noHost) }
func hostEmit(unsafe.Pointer, int32, unsafe.Pointer, int32) int32     { panic(noHost) }
func hostEventGet(unsafe.Pointer, int32, unsafe.Pointer, int32) int32 { panic(noHost) }
func hostEventSet(unsafe.Pointer, int32, unsafe.Pointer, int32) int32 { panic(noHost) }
func hostEventDelete(unsafe.Pointer, int32) int32                     { panic(noHost) }
