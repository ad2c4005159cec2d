package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// The hot path's pieces, measured one by one (verify, plugin call, commit)
// and together (BenchmarkRun). `auditproc bench` measures the whole command
// against a plain go-redis loop; these are for profiling:
//
//	go test ./internal/processor -run '^$' -bench Run/default -cpuprofile cpu.out
//	go tool pprof -top cpu.out

// benchEvent is a realistic audit event of about 330 bytes, as the default
// pipeline expects it.
const benchEvent = `{"event_id":"0190a5b2-7c1d-7e3f-9a4b-5c6d7e8f9a0b","timestamp":"2026-11-27T09:00:04.000000000Z",` +
	`"actor":"u-1842","email":"user1842@example.com","action":"invoice.approve","target":"invoice/104417",` +
	`"outcome":"success","severity":"info","source_ip":"10.1.4.4","region":"eu-west-1","request_id":"req-5c6d7e8f9a0b1c2d"}`

func benchKeys(b *testing.B) *integrity.Keyring {
	key, _ := integrity.GenerateKey()
	k, err := integrity.NewKeyring("bench", map[string][]byte{"bench": key})
	require.NoError(b, err)
	return k
}

// BenchmarkVerify is one entry's verification as the bus does it: "fields"
// on the flat field list of a read's reply (Keyring.VerifyFields, the read
// path), "map" on the values map go-redis returns (Keyring.Verify, with its
// copy of the event; a claim turns that map into a field list).
func BenchmarkVerify(b *testing.B) {
	keys := benchKeys(b)
	env, err := keys.Sign("audit:stream", []byte(benchEvent))
	require.NoError(b, err)
	values := map[string]any{}
	var fields []string
	vs := env.Values()
	for i := 0; i < len(vs); i += 2 {
		v := fmt.Sprint(vs[i+1])
		if raw, ok := vs[i+1].([]byte); ok {
			v = string(raw)
		}
		values[vs[i].(string)] = v
		fields = append(fields, vs[i].(string), v)
	}
	b.Run("fields", func(b *testing.B) {
		b.SetBytes(int64(len(benchEvent)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := keys.VerifyFields("audit:stream", fields); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		b.SetBytes(int64(len(benchEvent)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := keys.Verify("audit:stream", values); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// defaultPlugins loads the plugins of the repository's plugins.yaml with
// their configuration, as `auditproc run` does.
func defaultPlugins(b *testing.B, trusted bool) ([]*host.Plugin, config.Config) {
	root := filepath.Dir(wasmtest.Dir(b))
	root = filepath.Dir(root) // build/wasm -> repository root
	cfg, err := config.Load(config.Source{File: filepath.Join(root, "plugins.yaml")})
	require.NoError(b, err)
	var out []*host.Plugin
	for _, p := range cfg.Plugins {
		conf, err := json.Marshal(p.Config)
		require.NoError(b, err)
		pl, err := host.Load(context.Background(), host.PluginSpec{
			Name: p.Name, Path: p.Path, Config: conf, Sinks: p.Sinks,
			MemoryLimitBytes: uint64(p.MemoryLimit), Deadline: p.Deadline, Trusted: p.Trusted || trusted,
		}, host.Config{CacheDir: filepath.Join(root, "build", "cache")})
		require.NoError(b, err)
		b.Cleanup(func() { _ = pl.Close(context.Background()) })
		out = append(out, pl)
	}
	return out, cfg
}

func loadNoop(b *testing.B, module string) *host.Plugin {
	p, err := host.Load(context.Background(), host.PluginSpec{Name: "noop", Path: wasmtest.Path(b, module)}, host.Config{})
	require.NoError(b, err)
	b.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// BenchmarkPluginCall is one event through one plugin (deadline guard on,
// as configured by default), for the no-ops and each plugin of the default
// pipeline, then through the whole default pipeline.
func BenchmarkPluginCall(b *testing.B) {
	ev := host.Event{EntryID: "1764234004000-0", Stream: "audit:stream", KeyID: "bench",
		EventID: "0190a5b2-7c1d-7e3f-9a4b-5c6d7e8f9a0b", Deliveries: 1, Data: []byte(benchEvent)}
	run := func(b *testing.B, plugins ...*host.Plugin) {
		w, err := host.NewPipeline(plugins...).NewWorker(context.Background())
		require.NoError(b, err)
		defer w.Release()
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if res := w.Process(ctx, ev); res.Verdict != abi.VerdictOK {
				b.Fatalf("%s: %s", res.Verdict, res.Message)
			}
		}
	}
	b.Run("noop-go", func(b *testing.B) { run(b, loadNoop(b, "noop-go")) })
	b.Run("noop-c", func(b *testing.B) { run(b, loadNoop(b, "noop-c")) })
	plugins, _ := defaultPlugins(b, false)
	for _, p := range plugins {
		b.Run(p.Name(), func(b *testing.B) { run(b, p) })
	}
	b.Run("default", func(b *testing.B) { run(b, plugins...) })
	trusted, _ := defaultPlugins(b, true)
	for _, p := range trusted {
		b.Run(p.Name()+"-trusted", func(b *testing.B) { run(b, p) })
	}
	b.Run("default-trusted", func(b *testing.B) { run(b, trusted...) })
}

// BenchmarkCommit is the committer's Redis step for a batch of 256 entries:
// acks only (drop and ok without emits), and acks with one stream emit each.
func BenchmarkCommit(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	keys := benchKeys(b)
	bus, err := streambus.New(streambus.Config{}, nil, rdb, keys)
	require.NoError(b, err)
	ctx := context.Background()
	const batch = 256
	for _, emits := range []int{0, 1} {
		b.Run(fmt.Sprintf("emits=%d", emits), func(b *testing.B) {
			stream := fmt.Sprintf("commit:%d", emits)
			items := make([]streambus.Item, batch)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				require.NoError(b, rdb.Del(ctx, stream).Err())
				ids := fill(b, rdb, keys, stream, batch)
				require.NoError(b, rdb.XGroupCreate(ctx, stream, "g", "0").Err())
				require.NoError(b, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: batch, Block: -1}).Err())
				for i := range items {
					items[i] = streambus.Item{ID: ids[i]}
					if emits > 0 {
						items[i].Adds = []streambus.Add{{Stream: stream + ":sink", Event: []byte(benchEvent)}}
					}
				}
				b.StartTimer()
				res, err := bus.Commit(ctx, stream, "g", items...)
				require.NoError(b, err)
				require.EqualValues(b, batch, res.Acked)
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// fill appends n signed copies of benchEvent to stream.
func fill(b *testing.B, rdb *redis.Client, keys *integrity.Keyring, stream string, n int) []string {
	ctx := context.Background()
	env, err := keys.Sign(stream, []byte(benchEvent))
	require.NoError(b, err)
	var ids []string
	for done := 0; done < n; {
		pipe := rdb.Pipeline()
		var cmds []*redis.StringCmd
		for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
			cmds = append(cmds, pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()}))
		}
		_, err := pipe.Exec(ctx)
		require.NoError(b, err)
		for _, c := range cmds {
			ids = append(ids, c.Val())
		}
	}
	return ids
}

// BenchmarkRun drains a pre-filled stream through the whole loop (read,
// verify, workers, commit) in this process, with no plugin, a guarded Go
// no-op, forward alone (every event emitted to a stream sink) and the
// default pipeline; it reports entries/s.
func BenchmarkRun(b *testing.B) {
	const entries = 50_000
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	keys := benchKeys(b)
	stream := "run:stream"
	fill(b, rdb, keys, stream, entries)
	bus, err := streambus.New(streambus.Config{}, nil, rdb, keys)
	require.NoError(b, err)
	root := filepath.Dir(filepath.Dir(wasmtest.Dir(b)))
	defCfg, err := config.Load(config.Source{File: filepath.Join(root, "plugins.yaml")})
	require.NoError(b, err)
	sinks := map[string]processor.Sink{}
	for name, s := range defCfg.Sinks {
		sinks[name] = processor.Sink{Type: processor.SinkKind(s.Type), Stream: s.Stream, Path: s.Path}
	}
	groups := 0
	for _, sc := range []struct {
		name    string
		plugins func() []*host.Plugin
	}{
		{"verify", func() []*host.Plugin { return nil }},
		{"noop-go", func() []*host.Plugin { return []*host.Plugin{loadNoop(b, "noop-go")} }},
		{"forward", func() []*host.Plugin { p, _ := defaultPlugins(b, false); return p[len(p)-1:] }},
		{"default", func() []*host.Plugin { p, _ := defaultPlugins(b, false); return p }},
	} {
		b.Run(sc.name, func(b *testing.B) {
			pipeline := host.NewPipeline(sc.plugins()...)
			var busy time.Duration
			for b.Loop() {
				groups++
				proc, err := processor.New(processor.Config{
					Stream: stream, Group: fmt.Sprintf("g%d", groups), Consumer: "c", DeadLetter: "run:dead",
					Block: 100 * time.Millisecond, Sinks: sinks, StopWhenIdle: true,
				}, nil, bus, pipeline, nil)
				require.NoError(b, err)
				start := time.Now()
				require.NoError(b, proc.Run(context.Background()))
				busy += time.Since(start) - 100*time.Millisecond // the final empty read
				st := proc.Stats()
				require.EqualValues(b, entries, st.Processed.Load()+st.Dropped.Load())
			}
			b.ReportMetric(float64(b.N*entries)/busy.Seconds(), "entries/s")
		})
	}
}

// fillChained appends n events of a chained source (envelope version 2,
// distinct sequence numbers) to stream.
func fillChained(b *testing.B, rdb *redis.Client, keys *integrity.Keyring, stream string, n int) {
	ctx := context.Background()
	src, err := streambus.New(streambus.Config{Source: "bench"}, nil, rdb, keys)
	require.NoError(b, err)
	for done := 0; done < n; {
		pipe := rdb.Pipeline()
		for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
			env, err := src.Seal(stream, []byte(benchEvent))
			require.NoError(b, err)
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()})
		}
		_, err := pipe.Exec(ctx)
		require.NoError(b, err)
	}
}

// BenchmarkRunChained is BenchmarkRun's verify and noop-go cases on a
// stream of version 1 entries and on one of chained (version 2) entries,
// in one run: the cost of the replay lookup per batch and of acks that go
// through the commit script with their sequence numbers.
func BenchmarkRunChained(b *testing.B) {
	const entries = 50_000
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	keys := benchKeys(b)
	fill(b, rdb, keys, "run:v1", entries)
	fillChained(b, rdb, keys, "run:v2", entries)
	bus, err := streambus.New(streambus.Config{}, nil, rdb, keys)
	require.NoError(b, err)
	groups := 0
	for _, plugins := range []string{"verify", "noop-go"} {
		for _, stream := range []string{"run:v1", "run:v2"} {
			b.Run(plugins+"/"+stream[4:], func(b *testing.B) {
				var pl []*host.Plugin
				if plugins != "verify" {
					pl = append(pl, loadNoop(b, plugins))
				}
				pipeline := host.NewPipeline(pl...)
				var busy time.Duration
				for b.Loop() {
					groups++
					proc, err := processor.New(processor.Config{
						Stream: stream, Group: fmt.Sprintf("g%d", groups), Consumer: "c", DeadLetter: "run:dead",
						Block: 100 * time.Millisecond, StopWhenIdle: true,
					}, nil, bus, pipeline, nil)
					require.NoError(b, err)
					start := time.Now()
					require.NoError(b, proc.Run(context.Background()))
					busy += time.Since(start) - 100*time.Millisecond
					st := proc.Stats()
					require.EqualValues(b, entries, st.Processed.Load()+st.Dropped.Load())
				}
				b.ReportMetric(float64(b.N*entries)/busy.Seconds(), "entries/s")
			})
		}
	}
}
