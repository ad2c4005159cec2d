package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/streambus"
)

// groupStatus is one consumer group of the audit stream, as `status` shows it.
type groupStatus struct {
	Name            string           `json:"name"`
	Lag             int64            `json:"lag"`
	Pending         int64            `json:"pending"`
	LastDeliveredID string           `json:"last_delivered_id"`
	Consumers       []consumerStatus `json:"consumers"`
}

type consumerStatus struct {
	Name    string `json:"name"`
	Pending int64  `json:"pending"`
	// OldestIdleMS is how long the oldest pending entry of this consumer
	// has waited since its last delivery.
	OldestIdleMS int64 `json:"oldest_idle_ms"`
	IdleMS       int64 `json:"idle_ms"`
}

type streamStatus struct {
	// Shard is the shard's index when stream.shards is above 1.
	Shard  *int   `json:"shard,omitempty"`
	Stream string `json:"stream"`
	// Node is the master that serves the stream's slot, on Redis Cluster.
	Node             string        `json:"node,omitempty"`
	Length           int64         `json:"length"`
	DeadLetterStream string        `json:"dead_letter_stream"`
	DeadLetterLength int64         `json:"dead_letter_length"`
	Groups           []groupStatus `json:"groups"`
}

func statusCommand() *command {
	var (
		cf       *configFlags
		asJSON   bool
		watch    bool
		interval = durationFlag(time.Second)
		timeout  time.Duration
	)
	return &command{
		name:    "status",
		summary: "show the stream's consumer groups: lag, pending per consumer, dead letters",
		usage:   "[--json] [--group NAME] [--watch [--interval 1s]] [flags]",
		examples: `  auditproc status
  auditproc status --group audit-consumers
  auditproc status --json | jq '.groups[0].lag'
  auditproc status --watch --interval 2s

--watch shows the status again every interval until interrupted (Ctrl-C or
SIGTERM, exit 0): in place on a terminal; one frame after another, separated
by a blank line, when the output is a pipe or a file. With --json each frame
is one JSON object on one line (JSON Lines, never a cleared screen), with "at"
(when it was read) and "error" (when Redis did not answer). An error reading Redis is shown in the frame and the
view goes on.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
			fs.BoolVar(&watch, "watch", false, "refresh the view every --interval until interrupted")
			fs.Var(&interval, "interval", "with --watch: the refresh period, a `duration` with a unit")
			durationVar(fs, &timeout, "timeout", 5*time.Second, "give up when Redis does not answer within this time (with --watch: per refresh)")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("status takes no arguments, got %q", args)
			}
			if !watch && cf.set("interval") {
				return usagef("status: --interval goes with --watch")
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			rdb, err := redisClient(&cfg)
			if err != nil {
				return usageError{err}
			}
			defer rdb.Close()
			group := ""
			if cf.set("group") {
				group = cfg.Stream.Group
			}
			read := func(ctx context.Context) (trailStatus, error) {
				ctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return readTrailStatus(ctx, rdb, &cfg, group)
			}
			if !watch {
				st, err := read(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(sio.out)
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				st.print(sio.out)
				return nil
			}
			layout := screens
			if asJSON {
				layout = records
			}
			return refresh(ctx, sio.out, time.Duration(interval), layout, func(ctx context.Context, w io.Writer) error {
				at := time.Now().UTC()
				st, err := read(ctx)
				if asJSON {
					frame := statusFrame{At: at, trailStatus: st}
					if err != nil {
						frame.Error = err.Error()
					}
					return json.NewEncoder(w).Encode(frame)
				}
				fmt.Fprintf(w, "auditproc status — %s  every %s\n\n", at.Format(time.RFC3339), time.Duration(interval))
				if err != nil {
					fmt.Fprintln(w, err)
					return nil
				}
				st.print(w)
				return nil
			})
		},
	}
}

// statusFrame is one frame of `status --watch --json`: the status, when it
// was read, and the error if Redis did not answer.
type statusFrame struct {
	At time.Time `json:"at"`
	trailStatus
	Error string `json:"error,omitempty"`
}

// trailStatus is what `status` shows: the stream's status; with
// stream.shards above 1, the totals over the shards (lengths, and each
// group's and consumer's lag and pending summed) and each shard's status in
// Shards.
type trailStatus struct {
	streamStatus
	Shards []streamStatus `json:"shards,omitempty"`
	// RecordedShards is the shard count the trail's processors read
	// (streambus.ShardsKey), when one is recorded; when it is above
	// stream.shards, the shards past the configuration's are shown too.
	RecordedShards int `json:"recorded_shards,omitempty"`
	configured     int
}

// readTrailStatus reads the status of every shard of cfg's trail (of group
// only, when not empty).
func readTrailStatus(ctx context.Context, rdb redis.UniversalClient, cfg *config.Config, group string) (trailStatus, error) {
	out := trailStatus{configured: cfg.ShardCount()}
	rec, err := streambus.RecordedShards(ctx, rdb, cfg.Stream.Name)
	if err != nil {
		return out, fmt.Errorf("status of stream %q: %w", cfg.Stream.Name, err)
	}
	out.RecordedShards = rec
	count := max(cfg.ShardCount(), rec)
	for k := range count {
		sc := cfg.ShardConfig(k)
		st, err := readStatus(ctx, rdb, sc.Stream.Name, sc.DeadLetter.Stream)
		if err != nil {
			return out, fmt.Errorf("status of stream %q: %w", sc.Stream.Name, err)
		}
		if only, err := onlyGroup(st, group); err == nil {
			st = only
		} else if count == 1 {
			return out, err
		} else {
			st.Groups = []groupStatus{} // not on this shard yet (run creates it)
		}
		if cc, ok := rdb.(*redis.ClusterClient); ok {
			if node, err := cc.MasterForKey(ctx, sc.Stream.Name); err == nil {
				st.Node = node.Options().Addr
			}
		}
		if count == 1 {
			out.streamStatus = st
			return out, nil
		}
		st.Shard = &k
		out.Shards = append(out.Shards, st)
	}
	out.streamStatus = sumShards(cfg, out.Shards)
	if group != "" && len(out.Groups) == 0 {
		return out, fmt.Errorf("status: no shard of stream %q has a consumer group %q", cfg.Stream.Name, group)
	}
	return out, nil
}

// sumShards is the status of a sharded trail as a whole.
func sumShards(cfg *config.Config, shards []streamStatus) streamStatus {
	sum := streamStatus{Stream: cfg.Stream.Name, DeadLetterStream: cfg.DeadLetter.Stream, Groups: []groupStatus{}}
	groups := map[string]int{}
	for _, st := range shards {
		sum.Length += st.Length
		sum.DeadLetterLength += st.DeadLetterLength
		for _, g := range st.Groups {
			i, ok := groups[g.Name]
			if !ok {
				i = len(sum.Groups)
				groups[g.Name] = i
				sum.Groups = append(sum.Groups, groupStatus{Name: g.Name, Consumers: []consumerStatus{}})
			}
			sg := &sum.Groups[i]
			if !ok || sg.Lag >= 0 && g.Lag >= 0 {
				sg.Lag += g.Lag
			} else {
				sg.Lag = -1 // unknown on a shard: unknown in all
			}
			sg.Pending += g.Pending
			for _, c := range g.Consumers {
				j := slices.IndexFunc(sg.Consumers, func(x consumerStatus) bool { return x.Name == c.Name })
				if j < 0 {
					sg.Consumers = append(sg.Consumers, consumerStatus{Name: c.Name, IdleMS: c.IdleMS})
					j = len(sg.Consumers) - 1
				}
				sc := &sg.Consumers[j]
				sc.Pending += c.Pending
				sc.OldestIdleMS = max(sc.OldestIdleMS, c.OldestIdleMS)
				sc.IdleMS = min(sc.IdleMS, c.IdleMS)
			}
		}
	}
	return sum
}

// print writes the status as tables: one per shard, then the totals.
func (t trailStatus) print(w io.Writer) {
	if t.RecordedShards > t.configured {
		fmt.Fprintf(w, "note: the trail's processors read %d shards (recorded), this configuration names %d (stream.shards)\n\n", t.RecordedShards, t.configured)
	}
	for _, st := range t.Shards {
		fmt.Fprintf(w, "shard %d of %d: ", *st.Shard, len(t.Shards))
		printStatus(w, st)
		fmt.Fprintln(w)
	}
	if len(t.Shards) > 0 {
		fmt.Fprintf(w, "all %d shards: ", len(t.Shards))
	}
	printStatus(w, t.streamStatus)
}

// onlyGroup keeps the consumer group named (all when group is empty): an
// error when the stream has no such group.
func onlyGroup(st streamStatus, group string) (streamStatus, error) {
	if group == "" {
		return st, nil
	}
	var only []groupStatus
	for _, g := range st.Groups {
		if g.Name == group {
			only = append(only, g)
		}
	}
	if len(only) == 0 {
		return st, fmt.Errorf("status: stream %q has no consumer group %q", st.Stream, group)
	}
	st.Groups = only
	return st, nil
}

func readStatus(ctx context.Context, rdb redis.UniversalClient, stream, dlq string) (streamStatus, error) {
	st := streamStatus{Stream: stream, DeadLetterStream: dlq, Groups: []groupStatus{}}
	var err error
	if st.Length, err = rdb.XLen(ctx, stream).Result(); err != nil {
		return st, err
	}
	if st.DeadLetterLength, err = rdb.XLen(ctx, dlq).Result(); err != nil {
		return st, err
	}
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil && !isNoSuchKey(err) {
		return st, err
	}
	for _, g := range groups {
		gs := groupStatus{Name: g.Name, Lag: g.Lag, Pending: g.Pending, LastDeliveredID: g.LastDeliveredID, Consumers: []consumerStatus{}}
		consumers, err := rdb.XInfoConsumers(ctx, stream, g.Name).Result()
		if err != nil {
			return st, err
		}
		for _, c := range consumers {
			cs := consumerStatus{Name: c.Name, Pending: c.Pending, IdleMS: c.Idle.Milliseconds()}
			if c.Pending > 0 {
				oldest, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
					Stream: stream, Group: g.Name, Start: "-", End: "+", Count: 1, Consumer: c.Name,
				}).Result()
				if err != nil {
					return st, err
				}
				if len(oldest) > 0 {
					cs.OldestIdleMS = oldest[0].Idle.Milliseconds()
				}
			}
			gs.Consumers = append(gs.Consumers, cs)
		}
		st.Groups = append(st.Groups, gs)
	}
	return st, nil
}

// isNoSuchKey: XINFO on a stream that does not exist yet (go-redis's
// HasErrorPrefix compares after the "ERR " prefix).
func isNoSuchKey(err error) bool {
	return redis.HasErrorPrefix(err, "no such key") || errors.Is(err, redis.Nil)
}

func printStatus(out io.Writer, st streamStatus) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	node := ""
	if st.Node != "" {
		node = " (on " + st.Node + ")"
	}
	fmt.Fprintf(w, "stream %s%s: %d entries; dead-letter stream %s: %d entries\n", st.Stream, node, st.Length, st.DeadLetterStream, st.DeadLetterLength)
	if len(st.Groups) == 0 {
		fmt.Fprintln(w, "no consumer groups yet (auditproc run creates one)")
	}
	for _, g := range st.Groups {
		fmt.Fprintf(w, "\ngroup %s: lag %d, pending %d, last delivered %s\n", g.Name, g.Lag, g.Pending, g.LastDeliveredID)
		fmt.Fprintln(w, "  CONSUMER\tPENDING\tOLDEST PENDING IDLE\tLAST SEEN")
		for _, c := range g.Consumers {
			oldest := "-"
			if c.Pending > 0 {
				oldest = (time.Duration(c.OldestIdleMS) * time.Millisecond).Round(time.Second).String()
			}
			fmt.Fprintf(w, "  %s\t%d\t%s\t%s ago\n", c.Name, c.Pending, oldest, (time.Duration(c.IdleMS) * time.Millisecond).Round(time.Second))
		}
	}
	_ = w.Flush()
}
