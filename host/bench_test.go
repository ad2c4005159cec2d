package host

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// benchEvent is a realistic audit event of about 300 bytes.
var benchEvent = Event{
	EntryID:    "1700000000000-0",
	Stream:     "audit:stream",
	KeyID:      "k1",
	EventID:    "01J9Z8K3V6Q2W4E5R6T7Y8U9I0",
	Deliveries: 1,
	Data:       []byte(`{"event_id":"01J9Z8K3V6Q2W4E5R6T7Y8U9I0","time":"2024-10-05T12:34:56.789Z","actor":{"id":"u-1842","name":"alice","ip":"203.0.113.7"},"action":"user.login","target":{"type":"session","id":"s-99af"},"outcome":"success","meta":{"ua":"Mozilla/5.0 (X11; Linux x86_64)","mfa":true,"region":"eu-west-1"}}`),
}

// The no-op examples built with the SDKs, and raw no-ops without SDK (the
// floor of a guest call). All export auditproc_alloc_reuse, so the host
// makes one guest call per event.
var benchGuests = []struct{ name, module string }{
	{"c", "noop-c"},
	{"go", "noop-go"},
	{"c-raw", "host-noop-c"},
	{"go-raw", "host-noop-go"},
}

func benchLoad(b *testing.B, module string, trusted bool) *Plugin {
	b.Helper()
	p, err := Load(context.Background(), PluginSpec{Name: module, Path: wasmtest.Path(b, module), Trusted: trusted}, Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func guardName(trusted bool) string {
	if trusted {
		return "trusted"
	}
	return "guarded"
}

// BenchmarkProcess is the per-event cost of a no-op plugin: encode the input
// record, auditproc_alloc, auditproc_process, verdict.
func BenchmarkProcess(b *testing.B) {
	for _, g := range benchGuests {
		for _, trusted := range []bool{false, true} {
			b.Run(g.name+"/"+guardName(trusted), func(b *testing.B) {
				p := benchLoad(b, g.module, trusted)
				w, err := NewPipeline(p).NewWorker(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				defer w.Release()
				ctx := context.Background()
				b.ReportAllocs()
				var worst time.Duration
				for b.Loop() {
					res := w.Process(ctx, benchEvent)
					if res.Verdict != abi.VerdictOK {
						b.Fatal(res.Message)
					}
					worst = max(worst, res.Timings[0].Duration)
				}
				b.ReportMetric(float64(worst.Microseconds()), "worst-µs")
			})
		}
	}
}

// BenchmarkInstantiate is the cost of a fresh instance: instantiate,
// _initialize, auditproc_init.
func BenchmarkInstantiate(b *testing.B) {
	for _, g := range benchGuests {
		b.Run(g.name, func(b *testing.B) {
			p := benchLoad(b, g.module, false)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				inst, err := p.newInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				inst.close(-1)
			}
		})
	}
}

// BenchmarkInstanceMemory reports the memory one live instance holds: Go
// heap (host side) and the guest's linear memory after one event.
func BenchmarkInstanceMemory(b *testing.B) {
	for _, g := range benchGuests {
		b.Run(g.name, func(b *testing.B) {
			p := benchLoad(b, g.module, false)
			ctx := context.Background()
			const n = 20
			var heap, linear uint64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				insts := make([]*instance, n)
				for i := range insts {
					inst, err := p.newInstance(ctx)
					if err != nil {
						b.Fatal(err)
					}
					inst.process(ctx, &benchEvent, benchEvent.Data, time.Now())
					insts[i] = inst
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap = (after.HeapAlloc - before.HeapAlloc) / n
				linear = uint64(insts[0].mem.Size())
				for _, inst := range insts {
					inst.close(-1)
				}
			}
			b.ReportMetric(float64(heap), "heap-B/instance")
			b.ReportMetric(float64(linear), "linear-B/instance")
		})
	}
}

// BenchmarkGuardStyles measures one raw call of a C no-op's
// auditproc_process under the ways a deadline can be kept: no guard, the
// guard with one context per instance cancelled by a ticker (what the host
// does), and the guard with a context.WithTimeout per call.
func BenchmarkGuardStyles(b *testing.B) {
	wasm := wasmtest.Bytes(b, "host-noop-c")
	styles := []struct {
		name    string
		guard   bool
		perCall bool
	}{{"unguarded", false, false}, {"guard-ticker-ctx", true, false}, {"guard-timeout-per-call", true, true}}
	for _, st := range styles {
		b.Run(st.name, func(b *testing.B) {
			ctx := context.Background()
			rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(st.guard))
			defer rt.Close(ctx)
			if _, err := offerImports(ctx, rt); err != nil {
				b.Fatal(err)
			}
			mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
			if err != nil {
				b.Fatal(err)
			}
			proc := mod.ExportedFunction(abi.ExportProcess)
			callCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			stack := make([]uint64, 2)
			for b.Loop() {
				stack[0], stack[1] = 1024, 0
				if st.perCall {
					c, cancel := context.WithTimeout(ctx, time.Second)
					err = proc.CallWithStack(c, stack)
					cancel()
				} else {
					err = proc.CallWithStack(callCtx, stack)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkExamples is the per-event cost of example plugins that do work:
// redact (C) scans the whole event for secrets, normalize (standard Go)
// makes a few host calls (event_get, event_set, event_delete). It shows what
// the guard's loop-header checks cost beyond the call itself.
func BenchmarkExamples(b *testing.B) {
	examples := []struct{ name, module, config string }{
		{"redact-c", "redact", `{"fields":["ip"],"secret_names":true,"card_numbers":true,"bearer_tokens":true}`},
		{"normalize-go", "normalize", `{}`},
	}
	for _, ex := range examples {
		for _, trusted := range []bool{false, true} {
			b.Run(ex.name+"/"+guardName(trusted), func(b *testing.B) {
				p, err := Load(context.Background(), PluginSpec{Name: ex.name, Path: wasmtest.Path(b, ex.module), Config: []byte(ex.config), Trusted: trusted}, Config{})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close(context.Background())
				w, err := NewPipeline(p).NewWorker(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				defer w.Release()
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if res := w.Process(ctx, benchEvent); res.Verdict != abi.VerdictOK {
						b.Fatal(res.Message)
					}
				}
			})
		}
	}
}
