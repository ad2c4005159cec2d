package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/audit"
	"github.com/auditproc/auditproc/internal/integrity"
)

// ProducePipeline is how many XADDs the raw producer loop sends per round
// trip.
const ProducePipeline = 1000

// writeEventFile writes n unsigned JSON events, one per line, as a producer
// would hand them to auditproc emit, and returns their mean size.
func writeEventFile(path string, n int) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(2, 0x5eed))
	total := 0
	for i := range n {
		actor := r.IntN(5000)
		line := fmt.Appendf(nil, `{"actor":"u-%04d","email":"user%04d@example.com","action":%q,"target":"invoice/%06d",`+
			`"outcome":"success","severity":"info","source_ip":"10.1.%d.%d","region":"eu-west-1",`+
			`"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36","request_id":"req-%016x","n":%d}`+"\n",
			actor, actor, actions[r.IntN(len(actions))], r.IntN(1_000_000), r.IntN(256), r.IntN(256), r.Uint64(), i)
		total += len(line) - 1
		if _, err := w.Write(line); err != nil {
			return 0, err
		}
	}
	return total / max(n, 1), w.Flush()
}

// eachEvent calls f with every line of the file at path.
func eachEvent(path string, f func(line []byte) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 64<<10), integrity.DefaultMaxEventBytes+1)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			if err := f(line); err != nil {
				return err
			}
		}
	}
	return sc.Err()
}

// ProduceRaw appends every event of the file to stream with a plain go-redis
// loop: XADD of the envelope's four fields (the event as it is, a fixed
// placeholder signature: no stamping, no signing, no deduplication),
// ProducePipeline per round trip. It is the producers' baseline.
func ProduceRaw(ctx context.Context, rdb *redis.Client, stream, path string) (int, error) {
	const sig = "0000000000000000000000000000000000000000000000000000000000000000"
	return pipelined(ctx, rdb, path, func(pipe redis.Pipeliner, line []byte, _ int) {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{
			integrity.FieldVersion, integrity.Version, integrity.FieldKeyID, "bench", integrity.FieldEvent, bytes.Clone(line), integrity.FieldSig, sig,
		}})
	})
}

// pipelined queues add's command for every event of the file at path
// (numbered from 1), sending ProducePipeline per round trip, and returns
// how many it queued.
func pipelined(ctx context.Context, rdb *redis.Client, path string, add func(pipe redis.Pipeliner, line []byte, n int)) (int, error) {
	n := 0
	pipe := rdb.Pipeline()
	err := eachEvent(path, func(line []byte) error {
		n++
		add(pipe, line, n)
		if pipe.Len() >= ProducePipeline {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if pipe.Len() > 0 {
		_, err = pipe.Exec(ctx)
	}
	return n, err
}

// ProduceRawV2 appends every event of the file as ProduceRaw does, as the
// entries the producers write: the eight fields of envelope version 2 (a
// fixed source, the seq counting from 1, the prev the sig before), the
// event with an event_id and a timestamp inserted in front of its members,
// and a placeholder sig that differs per entry. No checks, no signing, no
// deduplication: what the producers' entries cost Redis and go-redis,
// without the producers' own work.
func ProduceRawV2(ctx context.Context, rdb *redis.Client, stream, path string) (int, error) {
	const (
		source = "bench.raw/0190a3c4e5f67a8b9c0d1e2f3a4b5c6d"
		stamp  = `{"` + integrity.EventIDMember + `":"0190a3c4-e5f6-7a8b-9c0d-000000000000","` +
			integrity.TimestampMember + `":"2026-12-04T00:00:00.000000000Z",`
		idEnd = len(`{"` + integrity.EventIDMember + `":"0190a3c4-e5f6-7a8b-9c0d-000000000000`) // after the id's last digit
	)
	prev := []byte(strings.Repeat("0", 64))
	return pipelined(ctx, rdb, path, func(pipe redis.Pipeliner, line []byte, n int) {
		event := append([]byte(stamp), line[1:]...)
		putHex(event[:idEnd], uint64(n))
		sig := []byte(strings.Repeat("0", 64)) // zeros before n's digits: no two sigs alike, none the first prev (n ≥ 1)
		putHex(sig, uint64(n))
		pipe.Do(ctx, "xadd", stream, "*", integrity.FieldVersion, "2", integrity.FieldKeyID, "bench", "src", source,
			"seq", n, "prev", prev, "kind", integrity.KindEvent, integrity.FieldEvent, event, integrity.FieldSig, sig)
		prev = sig
	})
}

// putHex writes n in hex into the end of b.
func putHex(b []byte, n uint64) {
	const digits = "0123456789abcdef"
	for i := len(b) - 1; i >= 0 && n > 0; i-- {
		b[i] = digits[n&15]
		n >>= 4
	}
}

// ProduceBatched appends every event of the file with an audit.Producer
// (cfg without Keys takes them from the environment) and returns how many
// were written.
func ProduceBatched(ctx context.Context, cfg audit.Config, path string) (int, error) {
	p, err := audit.NewProducer(cfg, nil)
	if err != nil {
		return 0, err
	}
	n := 0
	err = eachEvent(path, func(line []byte) error {
		_, err := p.Send(ctx, line)
		n++
		return err
	})
	if cerr := p.Close(ctx); err == nil {
		err = cerr
	}
	st := p.Stats()
	if err == nil && st.Written != uint64(n) {
		err = fmt.Errorf("bench: %d of %d events written", st.Written, n)
	}
	return int(st.Written), err
}

// ProduceSync appends every event of the file with the synchronous
// audit.Bus.Audit from workers goroutines.
func ProduceSync(ctx context.Context, cfg audit.Config, path string, workers int) (int, error) {
	bus, err := audit.New(cfg, nil)
	if err != nil {
		return 0, err
	}
	defer bus.Close()
	lines := make(chan []byte, 4*workers)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		n     int
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for line := range lines {
				_, err := bus.Audit(ctx, line)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					n++
				}
				mu.Unlock()
			}
		}()
	}
	err = eachEvent(path, func(line []byte) error {
		lines <- bytes.Clone(line)
		return nil
	})
	close(lines)
	wg.Wait()
	if err == nil {
		err = first
	}
	return n, err
}

// SyncWorkers is how many goroutines call the synchronous Audit in the
// produce-sync scenario.
const SyncWorkers = 8

// produceScenario is a producer run: a child appends the event file to a
// fresh stream and exits.
type produceScenario struct {
	name, title string
	args        []string // after the executable; the event file is appended
	// trail, env and of: as a drain scenario's (a cluster row).
	trail *clusterTrail
	env   []string
	of    string
}

func (r *runner) produceScenarios() []produceScenario {
	emit := []string{"emit", "--quiet", "--file"}
	list := []produceScenario{
		{name: "produce-raw", title: "producer: go-redis pipelined XADD loop, no signing (baseline)", args: []string{"bench", "--child", "produce-raw", "--events"}},
		{name: "produce-raw-v2", title: "producer: go-redis pipelined XADD loop of v2 entries, no signing (baseline v2)", args: []string{"bench", "--child", "produce-raw-v2", "--events"}},
		{name: "produce-emit", title: "producer: auditproc emit --file (check pass, sign v2, dedup script)", args: emit},
		{name: "produce-batch", title: "producer: audit.Producer (batching API, v2)", args: []string{"bench", "--child", "produce-batch", "--events"}},
		{name: "produce-sync", title: fmt.Sprintf("producer: synchronous audit.Bus.Audit, %d goroutines", SyncWorkers), args: []string{"bench", "--child", "produce-sync", "--events"}},
	}
	if r.cluster != nil {
		for _, n := range ClusterShards {
			t := r.trail("produce", n)
			list = append(list, produceScenario{name: fmt.Sprintf("cluster-emit-%d", n), title: "producer: auditproc emit --file — " + shardsTitle(n),
				args: emit, trail: t, env: t.env(r.cluster.url), of: "produce-emit"})
		}
	}
	if len(r.cfg.Only) == 0 {
		return list
	}
	var out []produceScenario
	for _, sc := range list {
		if slices.Contains(r.cfg.Only, sc.name) {
			out = append(out, sc)
		}
	}
	return out
}

// produces runs the producer scenarios, taking turns, and reports each
// one's fastest run: throughput from the child's start to its exit, its CPU
// and the Redis server's per event, its peak RSS.
func (r *runner) produces(ctx context.Context, rep *Report, scenarios []produceScenario) error {
	file := filepath.Join(r.dir, "events.jsonl")
	size, err := writeEventFile(file, r.cfg.Entries)
	if err != nil {
		return err
	}
	rep.ProduceEventBytes = size
	best := make([]Result, len(scenarios))
	for round := 1; round <= r.cfg.Rounds; round++ {
		for i, sc := range scenarios {
			r.log.Info("scenario_started", slog.String("scenario", sc.name), slog.Int("round", round))
			res, err := r.produce(ctx, sc, file, round)
			if err != nil {
				return fmt.Errorf("scenario %s: %w", sc.name, err)
			}
			r.log.Info("scenario_finished", slog.String("scenario", sc.name), slog.Int("round", round),
				slog.Float64("entries_per_s", res.Throughput), slog.Duration("cpu_per_entry", res.CPU))
			if res.Throughput > best[i].Throughput {
				best[i] = res
			}
		}
	}
	var base, baseV2 float64
	standalone := map[string]float64{} // throughput by name
	for i, sc := range scenarios {
		if sc.trail != nil {
			if of := standalone[sc.of]; of > 0 {
				best[i].Ratio = best[i].Throughput / of
			}
			rep.Results = append(rep.Results, best[i])
			continue
		}
		standalone[sc.name] = best[i].Throughput
		switch sc.name {
		case "produce-raw":
			base = best[i].Throughput
		case "produce-raw-v2":
			baseV2 = best[i].Throughput
		}
		if base > 0 {
			best[i].Ratio = best[i].Throughput / base
		}
		if baseV2 > 0 {
			best[i].RatioV2 = best[i].Throughput / baseV2
		}
		rep.Results = append(rep.Results, best[i])
	}
	return nil
}

func (r *runner) produce(ctx context.Context, sc produceScenario, file string, round int) (Result, error) {
	res := Result{Name: sc.name, Title: sc.title, Producer: true, Of: sc.of}
	rdb, streams, serverCPU := r.on(sc.trail, fmt.Sprintf("bench:produce:%s:%d", sc.name, round))
	if sc.trail != nil {
		res.Shards = sc.trail.shards
	}
	logf, err := os.Create(filepath.Join(r.dir, sc.name+".log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, r.cfg.Executable, append(sc.args, file)...)
	cmd.Env = append(slices.Concat(r.env, sc.env), "AUDITPROC_STREAM_NAME="+streams[0])
	cmd.Stdout, cmd.Stderr = logf, logf
	rcpu0, err := serverCPU(ctx)
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(2 * time.Millisecond)
	for running := true; running; {
		select {
		case err = <-exited:
			running = false
		case <-tick.C:
			res.PeakRSS = max(res.PeakRSS, PeakRSS(cmd.Process.Pid))
		}
	}
	tick.Stop()
	took := time.Since(start)
	if err != nil {
		return res, fmt.Errorf("%s: %w\n%s", strings.Join(sc.args, " "), err, tail(logf))
	}
	rcpu, err := serverCPU(ctx)
	if err != nil {
		return res, err
	}
	n, err := xlen(ctx, rdb, streams)
	if err != nil {
		return res, err
	}
	// Audit, the Producer and emit sign envelope v2: a chain per shard adds
	// a checkpoint entry every integrity.DefaultCheckpointEvery events, and
	// a closing one.
	extra := int64(0)
	if !strings.HasPrefix(sc.name, "produce-raw") {
		extra = int64(r.cfg.Entries/integrity.DefaultCheckpointEvery + 16*len(streams))
	}
	if n < int64(r.cfg.Entries) || n > int64(r.cfg.Entries)+extra {
		return res, fmt.Errorf("%s wrote %d entries, want %d\n%s", sc.name, n, r.cfg.Entries, tail(logf))
	}
	n = int64(r.cfg.Entries)
	if sc.trail != nil {
		// The stream and the producer's state: the next round writes the
		// same file to the same streams, which would only find duplicates.
		if err := r.cluster.emptySlots(ctx, sc.trail.placed); err != nil {
			return res, err
		}
	} else {
		_ = rdb.Unlink(ctx, streams[0]).Err()
	}
	ps := cmd.ProcessState
	res.Throughput = float64(n) / took.Seconds()
	res.CPU = (ps.UserTime() + ps.SystemTime()) / time.Duration(n)
	res.RedisCPU, res.NodeCPU = perEntry(rcpu0, rcpu, n)
	return res, nil
}

// isProducer reports whether a scenario name is a producer scenario's.
func isProducer(name string) bool {
	return strings.HasPrefix(name, "produce-") || strings.HasPrefix(name, "cluster-emit-")
}
