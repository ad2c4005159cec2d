package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

func dlqCommand() *command {
	return &command{
		name:    "dlq",
		summary: "list and replay dead-lettered entries",
		subs:    []*command{dlqListCommand(), dlqReplayCommand()},
	}
}

// deadLetter is one entry of the dead-letter stream.
type deadLetter struct {
	ID             string            `json:"id"`
	OriginalID     string            `json:"original_id"`
	OriginalStream string            `json:"original_stream"`
	Reason         string            `json:"reason"`
	Deliveries     string            `json:"deliveries"`
	KeyID          string            `json:"kid,omitempty"`
	EventID        string            `json:"event_id,omitempty"`
	Entry          map[string]string `json:"entry"` // the original entry's fields
}

func parseDeadLetter(m redis.XMessage) deadLetter {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	d := deadLetter{
		ID: m.ID, OriginalID: str(streambus.DeadLetterOriginalID), OriginalStream: str(streambus.DeadLetterOriginalStream),
		Reason: str(streambus.DeadLetterReason), Deliveries: str(streambus.DeadLetterDeliveries), KeyID: str(streambus.DeadLetterKeyID),
		Entry: map[string]string{},
	}
	for k, v := range m.Values {
		if name, ok := strings.CutPrefix(k, streambus.DeadLetterFieldPrefix); ok {
			d.Entry[name], _ = v.(string)
		}
	}
	if ev := d.Entry[integrity.FieldEvent]; ev != "" {
		d.EventID = gjson.Get(ev, "event_id").String()
	}
	return d
}

func dlqListCommand() *command {
	var (
		cf     *configFlags
		count  int64
		asJSON bool
	)
	return &command{
		name:    "list",
		summary: "list dead-lettered entries, oldest first",
		usage:   "[--count N] [--json]",
		examples: `  auditproc dlq list
  auditproc dlq list --json --count 1000 > dead.jsonl`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.Int64Var(&count, "count", 100, "list at most this many")
			fs.BoolVar(&asJSON, "json", false, "print one JSON object per entry")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("dlq list takes no arguments, got %q", args)
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
			msgs, err := rdb.XRangeN(ctx, cfg.DeadLetter.Stream, "-", "+", count).Result()
			if err != nil {
				return fmt.Errorf("dlq list %s: %w", cfg.DeadLetter.Stream, err)
			}
			if asJSON {
				enc := json.NewEncoder(sio.out)
				for _, m := range msgs {
					if err := enc.Encode(parseDeadLetter(m)); err != nil {
						return err
					}
				}
				return nil
			}
			w := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "DLQ ID\tORIGINAL ID\tDELIVERIES\tEVENT ID\tREASON")
			for _, m := range msgs {
				d := parseDeadLetter(m)
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.OriginalID, d.Deliveries, orDash(d.EventID), d.Reason)
			}
			_ = w.Flush()
			fmt.Fprintf(sio.out, "%d dead-lettered entr%s in %s\n", len(msgs), plural(len(msgs), "y", "ies"), cfg.DeadLetter.Stream)
			return nil
		},
	}
}

func dlqReplayCommand() *command {
	var (
		cf  *configFlags
		all bool
	)
	return &command{
		name:    "replay",
		summary: "append dead-lettered events to their stream again, signed, keeping their event id",
		usage:   "(--all | DLQ_ID ...)",
		examples: `  # after fixing the plugin that rejected them
  auditproc dlq replay --all
  auditproc dlq replay 1700000000000-0 1700000000001-0

Only entries whose original signature still verifies are replayed: an entry
dead-lettered as forged or tampered is never re-signed. A replayed entry is
removed from the dead-letter stream after it was appended; if auditproc stops
between the two steps, the entry may be replayed twice (same event_id).`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.BoolVar(&all, "all", false, "replay every dead-lettered entry")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, ids []string) error {
			if all == (len(ids) > 0) {
				return usagef("dlq replay: give --all or one or more dead-letter ids")
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			keys, err := integrity.LoadKeyring(os.Getenv)
			if err != nil {
				return usageError{err}
			}
			rdb, err := redisClient(&cfg)
			if err != nil {
				return usageError{err}
			}
			defer rdb.Close()
			bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, keys)
			if err != nil {
				return err
			}
			var msgs []redis.XMessage
			if all {
				msgs, err = rdb.XRange(ctx, cfg.DeadLetter.Stream, "-", "+").Result()
			} else {
				for _, id := range ids {
					var one []redis.XMessage
					one, err = rdb.XRange(ctx, cfg.DeadLetter.Stream, id, id).Result()
					if err == nil && len(one) == 0 {
						return usagef("dlq replay: no entry %s in %s", id, cfg.DeadLetter.Stream)
					}
					msgs = append(msgs, one...)
				}
			}
			if err != nil {
				return fmt.Errorf("dlq replay: read %s: %w", cfg.DeadLetter.Stream, err)
			}
			replayed, refused := 0, 0
			for _, m := range msgs {
				d := parseDeadLetter(m)
				values := make(map[string]any, len(d.Entry))
				for k, v := range d.Entry {
					values[k] = v
				}
				env, err := keys.Verify(d.OriginalStream, values)
				if err != nil {
					refused++
					fmt.Fprintf(sio.err, "refused %s (original %s): its signature does not verify (%s); tampered entries are never replayed\n",
						d.ID, d.OriginalID, integrity.Reason(err))
					continue
				}
				e, err := bus.XAdd(ctx, d.OriginalStream, env.Event, 0)
				if err != nil {
					return fmt.Errorf("dlq replay %s: %w (%d replayed before it)", d.ID, err, replayed)
				}
				if err := rdb.XDel(ctx, cfg.DeadLetter.Stream, d.ID).Err(); err != nil {
					return fmt.Errorf("dlq replay %s: appended as %s but not removed from %s: %w", d.ID, e.ID, cfg.DeadLetter.Stream, err)
				}
				replayed++
				fmt.Fprintf(sio.out, "replayed %s as %s in %s (event_id %s)\n", d.ID, e.ID, d.OriginalStream, e.EventID)
			}
			fmt.Fprintf(sio.out, "%d replayed, %d refused\n", replayed, refused)
			if refused > 0 && !all {
				return errSilent
			}
			return nil
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
