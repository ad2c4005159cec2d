// Command noop-go is the smallest auditproc plugin in Go: it passes every
// event on unchanged. Benchmarks use it to measure the cost of a Go guest
// call itself.
package main

import "github.com/auditproc/auditproc/abi/guest"

func init() {
	guest.Handle(func(*guest.Event) guest.Verdict { return guest.OK })
}

func main() {}
