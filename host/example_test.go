package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/auditproc/auditproc/host"
)

// modulePath finds a module built by scripts/build-plugins.sh (make plugins);
// the tests of this package build them first.
func modulePath(name string) string {
	return filepath.Join("..", "build", "wasm", name+".wasm")
}

// A pipeline of one plugin that tags every event and emits a derived one.
func Example() {
	ctx := context.Background()
	tag, err := host.Load(ctx, host.PluginSpec{
		Name:   "tag",
		Path:   modulePath("tag"),
		Config: []byte(`"reviewed"`), // handed to auditproc_init
		Sinks:  []string{"audit"},    // the sinks it may emit to
	}, host.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	pipeline := host.NewPipeline(tag)
	defer pipeline.Close(ctx)

	// One worker per goroutine: it holds one instance of every plugin.
	w, err := pipeline.NewWorker(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Release()

	res := w.Process(ctx, host.Event{
		EntryID: "1700000000000-0", Stream: "audit:stream", KeyID: "k1", EventID: "e-1", Deliveries: 1,
		Data: []byte(`{"action":"user.login"}`),
	})
	fmt.Println(res.Verdict, string(res.Event))
	for _, e := range res.Emits {
		fmt.Println(e.Sink, string(e.Event))
	}
	// Output:
	// ok {"action":"user.login","tag":"reviewed"}
	// audit {"tagged":true}
}

// A plugin that never returns is stopped at its deadline: the event gets
// retry, the instance is thrown away, and the next event gets a fresh one.
func Example_runawayGuest() {
	ctx := context.Background()
	loop, err := host.Load(ctx, host.PluginSpec{
		Name:     "loop",
		Path:     modulePath("loop"), // loops forever on an event containing "boom"
		Deadline: 50 * time.Millisecond,
	}, host.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer loop.Close(ctx)
	w, err := host.NewPipeline(loop).NewWorker(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Release()

	start := time.Now()
	res := w.Process(ctx, host.Event{EntryID: "1-0", Deliveries: 1, Data: []byte(`{"x":"boom"}`)})
	fmt.Println(res.Verdict, res.Plugin, errors.Is(res.Err, host.ErrDeadline), time.Since(start) < time.Second)
	fmt.Println(res.Message)

	res = w.Process(ctx, host.Event{EntryID: "2-0", Deliveries: 1, Data: []byte(`{"x":"fine"}`)})
	fmt.Println(res.Verdict, loop.Stats().Restarts[host.CauseDeadline])
	// Output:
	// retry loop true true
	// plugin "loop": host: plugin call exceeded its deadline of 50ms
	// ok 1
}

// Load refuses a module built for another ABI version, saying which.
func ExampleLoad_abiVersion() {
	_, err := host.Load(context.Background(), host.PluginSpec{Name: "old", Path: modulePath("abi-v2")}, host.Config{})
	fmt.Println(errors.Is(err, host.ErrABIVersion))
	fmt.Println(err)
	// Output:
	// true
	// load plugin "old": host: module ABI version not supported: module is built for ABI v2; this host speaks v1
}

// Inspect reports what Load would check, for `auditproc plugin check`.
func ExampleInspect() {
	wasm, err := os.ReadFile(modulePath("import-sock"))
	if err != nil {
		fmt.Println(err)
		return
	}
	info, err := host.Inspect(context.Background(), wasm)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ABI version", info.ABIVersion)
	for _, p := range info.Problems {
		fmt.Println(p)
	}
	// Output:
	// ABI version 1
	// host: module imports something the host does not offer: module imports wasi_snapshot_preview1.sock_accept: plugins get no network
	// host: module imports something the host does not offer: module imports wasi_snapshot_preview1.sock_recv: plugins get no network
}
