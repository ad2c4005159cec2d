package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

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
	Entry          map[string]string `json:"entry"` // the original entry's fields (the first value of a repeated one)
	// EntryFields are the original entry's fields as stored: name, value,
	// … in stream order, a field named twice included.
	EntryFields []string `json:"entry_fields"`
	// Repeated names a field that appears twice (in the entry or in the
	// dead letter itself): such a letter is never replayed.
	Repeated string `json:"repeated_field,omitempty"`
}

func parseDeadLetter(m streambus.RawEntry) deadLetter {
	d := deadLetter{ID: m.ID, Entry: map[string]string{}, EntryFields: []string{}}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Fields); i += 2 {
		k, v := m.Fields[i], m.Fields[i+1]
		if seen[k] && d.Repeated == "" {
			d.Repeated = k
		}
		seen[k] = true
		if name, ok := strings.CutPrefix(k, streambus.DeadLetterFieldPrefix); ok {
			d.EntryFields = append(d.EntryFields, name, v)
			if _, dup := d.Entry[name]; !dup {
				d.Entry[name] = v
			}
			continue
		}
		var dst *string
		switch k {
		case streambus.DeadLetterOriginalID:
			dst = &d.OriginalID
		case streambus.DeadLetterOriginalStream:
			dst = &d.OriginalStream
		case streambus.DeadLetterReason:
			dst = &d.Reason
		case streambus.DeadLetterDeliveries:
			dst = &d.Deliveries
		case streambus.DeadLetterKeyID:
			dst = &d.KeyID
		}
		if dst != nil && *dst == "" {
			*dst = v
		}
	}
	if ev := d.Entry[integrity.FieldEvent]; ev != "" {
		d.EventID = gjson.Get(ev, "event_id").String()
	}
	return d
}

func dlqListCommand() *command {
	var (
		cf      *configFlags
		shardNo int
		count   int64
		asJSON  bool
	)
	return &command{
		name:    "list",
		summary: "list dead-lettered entries, oldest first",
		usage:   "[--count N] [--json] [--stream NAME]",
		examples: `  auditproc dlq list
  auditproc dlq list --json --count 1000 > dead.jsonl

  # only the dead letters of one audit stream (of the first --count entries)
  auditproc dlq list --stream audit:payments`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.Int64Var(&count, "count", 100, "list at most this many")
			fs.IntVar(&shardNo, "shard", -1, "with stream.shards: only this shard's dead-letter stream (default: every shard's)")
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
			// Listing verifies nothing: any keyring will do.
			bus, err := streambus.New(streambus.Config{}, slog.New(slog.DiscardHandler), rdb, listKeyring())
			if err != nil {
				return err
			}
			dlqs, err := selectShards(cfg.DeadLetterShards(), shardNo)
			if err != nil {
				return err
			}
			// Each stream also holds its writers' checkpoints and
			// withdrawals: only letters are listed. --stream lists the
			// dead letters of that audit stream (its shards) only.
			streams := cfg.StreamShards()
			var kept []streambus.RawEntry
			for _, dlq := range dlqs {
				msgs, err := bus.XRange(ctx, dlq, "-", "+", count-int64(len(kept)))
				if err != nil {
					return fmt.Errorf("dlq list %s: %w", dlq, err)
				}
				for _, m := range msgs {
					if m.IsDeadLetter() && (!cf.set("stream") || slices.Contains(streams, parseDeadLetter(m).OriginalStream)) {
						kept = append(kept, m)
					}
				}
				if int64(len(kept)) >= count {
					break
				}
			}
			msgs := kept
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
			// With shards, the audit stream each letter came from tells
			// its shard (give it to replay as --shard when an id is in two).
			sharded := len(dlqs) > 1
			if sharded {
				fmt.Fprint(w, "STREAM\t")
			}
			fmt.Fprintln(w, "DLQ ID\tORIGINAL ID\tDELIVERIES\tEVENT ID\tREASON")
			for _, m := range msgs {
				d := parseDeadLetter(m)
				if sharded {
					fmt.Fprintf(w, "%s\t", d.OriginalStream)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.OriginalID, d.Deliveries, orDash(d.EventID), d.Reason)
			}
			_ = w.Flush()
			fmt.Fprintf(sio.out, "%d dead-lettered entr%s in %s\n", len(msgs), plural(len(msgs), "y", "ies"), strings.Join(dlqs, ", "))
			return nil
		},
	}
}

func dlqReplayCommand() *command {
	var (
		cf       *configFlags
		all      bool
		unsealed bool
		shardNo  int
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
between the two steps, the entry may be replayed twice (same event_id).

A dead letter must carry its writer's seal, which must verify: a letter
added or changed by someone without the key is refused. Letters written by
an auditproc that did not seal them are refused too, unless --unsealed.`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			fs.BoolVar(&all, "all", false, "replay every dead-lettered entry")
			fs.BoolVar(&unsealed, "unsealed", false, "also replay dead letters without a seal (written before auditproc sealed them)")
			fs.IntVar(&shardNo, "shard", -1, "with stream.shards: only this shard's dead-letter stream (default: every shard's)")
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
			// Replayed entries are signed anew as one chain (envelope v2),
			// closed when the replay ends.
			bus, err := streambus.New(streambus.Config{Source: hostSource("dlq-replay")}, slog.New(slog.DiscardHandler), rdb, keys)
			if err != nil {
				return err
			}
			defer func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if err := bus.CloseChain(cctx); err != nil {
					fmt.Fprintf(sio.err, "dlq replay: closing checkpoint of %s not written: %v\n", bus.Source(), err)
				}
			}()
			// Each dead-letter stream (one per shard) is read whole: a
			// letter is judged against the others (copies, withdrawals,
			// where sealing began).
			dlqs, err := selectShards(cfg.DeadLetterShards(), shardNo)
			if err != nil {
				return err
			}
			type shardLetters struct {
				dlq         string
				every, msgs []streambus.RawEntry
			}
			var work []shardLetters
			found := map[string]string{} // dead-letter id -> its stream
			for _, dlq := range dlqs {
				every, err := xrangeAll(ctx, bus, dlq)
				if err != nil {
					return fmt.Errorf("dlq replay: read %s: %w", dlq, err)
				}
				msgs := every
				if !all {
					msgs = nil
					for _, id := range ids {
						i := slices.IndexFunc(every, func(m streambus.RawEntry) bool { return m.ID == id })
						if i < 0 {
							continue
						}
						if other, twice := found[id]; twice {
							return usagef("dlq replay: %s is an entry of both %s and %s: give --shard", id, other, dlq)
						}
						found[id] = dlq
						msgs = append(msgs, every[i])
					}
				}
				work = append(work, shardLetters{dlq, every, msgs})
			}
			for _, id := range ids {
				if _, ok := found[id]; !ok {
					return usagef("dlq replay: no entry %s in %s", id, strings.Join(dlqs, ", "))
				}
			}
			replayed, refused := 0, 0
			for _, w := range work {
				r, f, err := replayLetters(ctx, sio, bus, rdb, keys, w.dlq, w.every, w.msgs, all, unsealed)
				replayed, refused = replayed+r, refused+f
				if err != nil {
					return err
				}
			}
			fmt.Fprintf(sio.out, "%d replayed, %d refused\n", replayed, refused)
			if refused > 0 && !all {
				return errSilent
			}
			return nil
		},
	}
}

// replayLetters replays msgs, entries of the dead-letter stream dlq (every
// is the whole stream, against which each letter is judged), and says how
// many were replayed and refused.
func replayLetters(ctx context.Context, sio stdio, bus *streambus.Bus, rdb redis.UniversalClient, keys *integrity.Keyring,
	dlq string, every, msgs []streambus.RawEntry, all, unsealed bool) (replayed, refused int, err error) {
	book := newLetterBook(keys, dlq, every)
	for _, m := range msgs {
		if !m.IsDeadLetter() {
			if !all {
				return replayed, refused, usagef("dlq replay: %s in %s is not a dead letter (a checkpoint or a withdrawal)", m.ID, dlq)
			}
			continue
		}
		d := parseDeadLetter(m)
		if _, err := keys.VerifySealed(dlq, m.Fields); integrity.IsSealed(m.Fields) && err != nil {
			refused++
			fmt.Fprintf(sio.err, "refused %s (original %s): its seal does not verify (%s); a dead letter added or changed without the key is never replayed\n",
				d.ID, d.OriginalID, integrity.Reason(err))
			continue
		}
		if why := book.refusal(m, unsealed); why != "" {
			refused++
			fmt.Fprintf(sio.err, "refused %s (original %s): %s\n", d.ID, d.OriginalID, why)
			continue
		}
		if d.Repeated != "" {
			refused++
			fmt.Fprintf(sio.err, "refused %s (original %s): field %q is named twice (malformed_envelope); ambiguous entries are never replayed\n",
				d.ID, d.OriginalID, d.Repeated)
			continue
		}
		env, err := keys.VerifyFields(d.OriginalStream, d.EntryFields)
		if err != nil {
			refused++
			fmt.Fprintf(sio.err, "refused %s (original %s): its signature does not verify (%s); tampered entries are never replayed\n",
				d.ID, d.OriginalID, integrity.Reason(err))
			continue
		}
		e, err := bus.XAdd(ctx, d.OriginalStream, env.Event, 0)
		if err != nil {
			return replayed, refused, fmt.Errorf("dlq replay %s: %w (%d replayed before it)", d.ID, err, replayed)
		}
		// A sealed letter's deletion is accounted for first in its
		// chain by a withdrawal, so that verify sees no gap.
		if w, ok := m.Withdrawal(d.OriginalStream + " " + e.ID); ok {
			if _, err := bus.AppendSealed(ctx, dlq, w); err != nil {
				return replayed, refused, fmt.Errorf("dlq replay %s: appended as %s but its withdrawal not written, so not removed from %s: %w", d.ID, e.ID, dlq, err)
			}
		}
		if err := rdb.XDel(ctx, dlq, d.ID).Err(); err != nil {
			return replayed, refused, fmt.Errorf("dlq replay %s: appended as %s but not removed from %s: %w", d.ID, e.ID, dlq, err)
		}
		replayed++
		fmt.Fprintf(sio.out, "replayed %s as %s in %s (event_id %s)\n", d.ID, e.ID, d.OriginalStream, e.EventID)
	}
	return replayed, refused, nil
}

// selectShards is names, or with --shard k its k-th alone (-1, the flag's
// default: all).
func selectShards(names []string, k int) ([]string, error) {
	if k == -1 {
		return names, nil
	}
	if k < 0 || k >= len(names) {
		return nil, usagef("--shard %d: the trail has %d shard(s) (stream.shards), numbered from 0", k, len(names))
	}
	return names[k : k+1], nil
}

// xrangeAll reads a whole stream in pages.
func xrangeAll(ctx context.Context, bus *streambus.Bus, stream string) ([]streambus.RawEntry, error) {
	var out []streambus.RawEntry
	start := "-"
	for {
		page, err := bus.XRange(ctx, stream, start, "+", 1000)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out, nil
		}
		start = "(" + page[len(page)-1].ID
	}
}

// listKeyring is a keyring for commands that read without verifying.
func listKeyring() *integrity.Keyring {
	key, _ := integrity.GenerateKey()
	k, _ := integrity.NewKeyring("list", map[string][]byte{"list": key})
	return k
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

// letterBook is what a dead-letter stream says about its letters: the
// seals (source and seq) each letter holds, the ones withdrawn, and where
// sealing began.
type letterBook struct {
	seals     map[string]int    // "<source> <seq>" -> letters holding it
	withdrawn map[string]string // "<source> <seq>" -> the withdrawal's id
	// firstChained is the id of the stream's first sealed or chained
	// entry: a letter without a seal after it was written without the key.
	firstChained string
}

// newLetterBook reads the entries of the dead-letter stream dlq; only
// seals that verify with keys count.
func newLetterBook(keys *integrity.Keyring, dlq string, entries []streambus.RawEntry) letterBook {
	b := letterBook{seals: map[string]int{}, withdrawn: map[string]string{}}
	for _, m := range entries {
		sealed := false
		if integrity.IsSealed(m.Fields) {
			_, err := keys.VerifySealed(dlq, m.Fields)
			sealed = err == nil
		}
		if (sealed || slices.Contains(m.Fields, integrity.FieldSource)) && b.firstChained == "" {
			b.firstChained = m.ID
		}
		if !sealed {
			continue
		}
		if src, seq, ok := sealOf(m.Fields); ok && m.IsDeadLetter() {
			b.seals[src+" "+seq]++
		}
		if w := m.Value(streambus.WithdrawnSource); w != "" {
			b.withdrawn[w+" "+m.Value(streambus.WithdrawnSeq)] = m.ID
		}
	}
	return b
}

// refusal says why letter m must not be replayed, "" when it may be (its
// seal is checked apart).
func (b letterBook) refusal(m streambus.RawEntry, unsealed bool) string {
	src, seq, ok := sealOf(m.Fields)
	if !ok {
		switch {
		case b.firstChained != "" && streambus.CompareIDs(m.ID, b.firstChained) > 0:
			return fmt.Sprintf("the dead letter has no seal, though the stream's letters are sealed since %s: it was written without the key", b.firstChained)
		case !unsealed:
			return "the dead letter has no seal; replay letters written before auditproc sealed them with --unsealed"
		}
		return ""
	}
	key := src + " " + seq
	if w := b.withdrawn[key]; w != "" {
		return fmt.Sprintf("its seal (source %s, seq %s) was withdrawn by %s: it was replayed already; this is a leftover of an interrupted replay or a copy (delete it with XDEL)", src, seq, w)
	}
	if n := b.seals[key]; n > 1 {
		return fmt.Sprintf("its seal (source %s, seq %s) is on %d letters: all but one are copies (verify reports them as replays); none is replayed until the copies are deleted", src, seq, n)
	}
	return ""
}

// sealOf returns the source and seq of a sealed entry's seal.
func sealOf(fields []string) (src, seq string, ok bool) {
	if !integrity.IsSealed(fields) || len(fields) < 10 {
		return "", "", false
	}
	seal := fields[len(fields)-10:]
	if seal[2] != integrity.SealSource || seal[4] != integrity.SealSeq {
		return "", "", false
	}
	return seal[3], seal[5], true
}
