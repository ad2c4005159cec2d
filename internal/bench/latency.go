package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/auditproc/auditproc/internal/integrity"
)

// latency offers entries at cfg.Rate for cfg.LatencyFor to a scenario that
// forwards every event it keeps to sink (a stream sink committed with the
// ack), and records append-to-ack percentiles into res. For a scenario
// forwarding to an external destination (dest), the percentiles are from
// the append to the destination's receipt (its clock; the ack follows the
// sink's confirmation).
func (r *runner) latency(ctx context.Context, sc scenario, res *Result) error {
	sink := sc.sink
	switch {
	case sc.dest != nil:
		if err := sc.dest.reset(ctx); err != nil {
			return err
		}
	case sink == "":
		return fmt.Errorf("no forward sink in the scenario")
	default:
		if err := r.rdb.Del(ctx, sink).Err(); err != nil {
			return err
		}
	}
	// A stream of its own: a group on a shared one would start with the
	// previous scenario's entries as a backlog.
	latencyStream := latencyStream + ":" + sc.name
	group, err := r.newGroup(ctx, latencyStream, "latency-"+sc.name)
	if err != nil {
		return err
	}
	args := slices.DeleteFunc(slices.Clone(sc.args), func(a string) bool { return a == "--stop-when-idle" })
	lsc := sc
	lsc.args = args
	cmd, logf, err := r.child(ctx, lsc, latencyStream, group)
	if err != nil {
		return err
	}
	defer logf.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopChild := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			return fmt.Errorf("%w\n%s", err, tail(logf))
		}
		return nil
	}

	// Wait until the consumer reads.
	for deadline := time.Now().Add(30 * time.Second); ; {
		cs, err := r.rdb.XInfoConsumers(ctx, latencyStream, group).Result()
		if err == nil && len(cs) > 0 {
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("consumer exited before reading: %v\n%s", err, tail(logf))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = stopChild()
			return fmt.Errorf("consumer did not start reading within 30s")
		}
	}
	time.Sleep(200 * time.Millisecond)

	// Produce at the offered rate, a pipelined XADD every millisecond.
	g := newEventGen(r.keys, 2)
	sent := map[string]int64{} // event id -> source entry id's milliseconds
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	var adds []*redis.StringCmd
	var ids []string
	for n := 0; ; {
		<-tick.C
		el := time.Since(start)
		if el >= r.cfg.LatencyFor {
			break
		}
		due := int(el.Seconds() * float64(r.cfg.Rate))
		if due <= n {
			continue
		}
		pipe := r.rdb.Pipeline()
		adds, ids = adds[:0], ids[:0]
		for ; n < due; n++ {
			env, err := g.next(latencyStream)
			if err != nil {
				tick.Stop()
				_ = stopChild()
				return err
			}
			ids = append(ids, env.EventID)
			adds = append(adds, pipe.XAdd(ctx, &redis.XAddArgs{Stream: latencyStream, Values: env.Values()}))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			tick.Stop()
			_ = stopChild()
			return err
		}
		for i, a := range adds {
			sent[ids[i]] = idMillis(a.Val())
		}
	}
	tick.Stop()

	// Wait for every entry to be acked, then stop the consumer.
	total := int64(len(sent))
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, acked, err := r.progress(ctx, latencyStream, group)
		if err == nil && acked >= total {
			break
		}
		if time.Now().After(deadline) {
			_ = stopChild()
			return fmt.Errorf("%d entries not acked within 60s of the end of the offer", total-acked)
		}
	}
	if err := stopChild(); err != nil {
		return err
	}

	var lat []time.Duration
	if sc.dest != nil {
		if err := sc.dest.await(ctx, int(total)); err != nil {
			return err
		}
		seen := map[string]bool{}
		err := sc.dest.arrivals(ctx, func(id string, at time.Time) {
			// A message delivered twice (at least once) counts once, its
			// first arrival.
			if src, ok := sent[id]; ok && !seen[id] {
				seen[id] = true
				lat = append(lat, at.Sub(time.UnixMilli(src)))
			}
		})
		if err != nil {
			return err
		}
	}
	for from := "-"; sc.dest == nil; {
		msgs, err := r.rdb.XRangeN(ctx, sink, from, "+", 10_000).Result()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			ev, _ := m.Values[integrity.FieldEvent].(string)
			if src, ok := sent[gjson.Get(ev, integrity.EventIDMember).Str]; ok {
				lat = append(lat, time.Duration(idMillis(m.ID)-src)*time.Millisecond)
			}
		}
		if len(msgs) < 10_000 {
			break
		}
		from = "(" + msgs[len(msgs)-1].ID
	}
	if len(lat) == 0 {
		if sc.dest != nil {
			return fmt.Errorf("no forwarded entry found in %s", sc.dest.kind)
		}
		return fmt.Errorf("no forwarded entry found in %s", sink)
	}
	slices.Sort(lat)
	res.Latency, res.LatN = true, len(lat)
	res.P50 = lat[len(lat)*50/100]
	res.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	return nil
}

// idMillis is the millisecond part of a stream entry id.
func idMillis(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	v, _ := strconv.ParseInt(ms, 10, 64)
	return v
}
