package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/auditproc/auditproc/audit"
)

func spoolCommand() *command {
	return &command{
		name:    "spool",
		summary: "show or send what a producer's spool holds",
		subs:    []*command{spoolStatusCommand(), spoolDrainCommand()},
	}
}

func spoolStatusCommand() *command {
	var asJSON bool
	return &command{
		name:    "status",
		summary: "show the events waiting in a spool directory",
		usage:   "[--json] DIR",
		examples: `  auditproc spool status /var/spool/auditproc
  auditproc spool status --json /var/spool/auditproc

The spool is read, not changed: it works while a producer holds it.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
		},
		run: func(_ context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usagef("spool status takes one directory, got %q", args)
			}
			st, err := audit.ReadSpoolStatus(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(sio.out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printSpoolStatus(sio.out, st)
			return nil
		},
	}
}

func printSpoolStatus(w io.Writer, st audit.SpoolStatus) {
	fmt.Fprintf(w, "spool %s: %d event(s) in %d record(s), %d segment(s), %d bytes\n", st.Dir, st.Events, st.Records, st.Segments, st.Bytes)
	streams := make([]string, 0, len(st.Streams))
	for s := range st.Streams {
		streams = append(streams, s)
	}
	slices.Sort(streams)
	for _, s := range streams {
		fmt.Fprintf(w, "  stream %s: %d event(s)\n", s, st.Streams[s])
	}
	if !st.Oldest.IsZero() {
		fmt.Fprintf(w, "  oldest segment written %s (%s ago)\n", st.Oldest.UTC().Format(time.RFC3339), time.Since(st.Oldest).Round(time.Second))
	}
	if st.InUse {
		fmt.Fprintln(w, "  in use by a running producer, which drains it once Redis answers")
	}
	if st.TornTail {
		fmt.Fprintln(w, "  the last record was cut short by a crash: its events were never reported spooled; the next producer drops it")
	}
}

func spoolDrainCommand() *command {
	var (
		cf      *configFlags
		timeout time.Duration
	)
	return &command{
		name:    "drain",
		summary: "send a spool's events to Redis, in order, and exit",
		usage:   "[flags] DIR",
		examples: `  auditproc spool drain /var/spool/auditproc

Each event goes to the stream it was signed for; events Redis holds already
are skipped. Exit 0 once the spool is empty, 1 when Redis does not take
them within --timeout (they stay in the spool).`,
		flags: func(fs *flag.FlagSet) {
			cf = newConfigFlags(fs)
			durationVar(fs, &timeout, "timeout", time.Minute, "give up after this long")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usagef("spool drain takes one directory, got %q", args)
			}
			if _, err := os.Stat(args[0]); err != nil {
				return usagef("spool drain: %v", err)
			}
			cfg, err := cf.loadNoPipeline()
			if err != nil {
				return err
			}
			keys, err := audit.LoadKeyring(os.Getenv)
			if err != nil {
				return usageError{err}
			}
			rdb, err := redisClient(&cfg)
			if err != nil {
				return usageError{err}
			}
			defer rdb.Close()
			p, err := audit.NewProducer(audit.Config{Client: rdb, Keys: keys, Stream: cfg.Stream.Name,
				WriteTimeout: cfg.Redis.IOTimeout, SpoolDir: args[0]}, newLogger(sio.err, "text", "warn"))
			if err != nil {
				return usageError{err}
			}
			start := p.Stats().SpoolEvents
			deadline := time.Now().Add(timeout)
			for p.Stats().SpoolEvents > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
			st := p.Stats()
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Redis.IOTimeout)
			defer cancel()
			if err := p.Close(cctx); err != nil {
				return err
			}
			if st.SpoolEvents > 0 {
				return fmt.Errorf("spool drain: %d of %d event(s) still wait in %s (Redis did not take them within %s)", st.SpoolEvents, start, args[0], timeout)
			}
			fmt.Fprintf(sio.out, "drained %d event(s) from %s: %d written, %d already there\n", start, args[0], st.Written, st.Duplicates)
			return nil
		},
	}
}
