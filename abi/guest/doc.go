// Package guest is the Go SDK for auditproc plugins built with the standard
// toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o myplugin.wasm ./myplugin
//
// Importing the package is what makes a module an auditproc plugin: it
// carries the //go:wasmexport functions of ABI v1 (auditproc_abi_v1,
// auditproc_alloc, auditproc_init, auditproc_process) and the imports of the
// host functions. A plugin is a handler registered from an init function and
// an empty main; -buildmode=c-shared builds a reactor whose _initialize runs
// the package init functions but never main:
//
//	package main
//
//	import "github.com/auditproc/auditproc/abi/guest"
//
//	func init() {
//		guest.Init(func(config []byte) error { return nil }) // optional
//		guest.Handle(func(ev *guest.Event) guest.Verdict {
//			if s, ok := ev.GetString("severity"); ok && s == "debug" {
//				return guest.Drop("debug event")
//			}
//			return guest.OK
//		})
//	}
//
//	func main() {}
//
// The easy path is native field access: [Event.Get], [Event.GetString],
// [Event.Set], [Event.Delete] ask the host to read or change one field, which
// costs far less inside a Go guest than decoding the event with
// encoding/json (about 100 µs per event). Decode the configuration, which
// arrives once per instance, with [ParseConfig]: encoding/json and fmt would
// make the module about 1.4 MB larger, which every process that loads it
// pays for in start-up time and memory.
//
// Outside a wasip1 build the package compiles, so plugin code can be vetted
// and its pure helpers tested natively, but every call that reaches the host
// panics.
package guest
