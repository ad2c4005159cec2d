package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

// The live views (`top`, `status --watch`) draw a frame every interval until
// SIGINT or SIGTERM ends ctx, then exit 0.

// clearScreen moves the cursor home and clears the terminal.
const clearScreen = "\x1b[H\x1b[2J"

// durationFlag is a flag's duration: with a unit and above zero (a bare
// number is not read as nanoseconds, nor 0 as "no limit").
// flag.Duration would take "0" and, for a bare "5", say only "parse error".
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: give a unit, as in 1s, 500ms or 2m", s)
	}
	if v <= 0 {
		return fmt.Errorf("%q: the duration must be above zero, as in 1s", s)
	}
	*d = durationFlag(v)
	return nil
}

// durationVar defines a duration flag that needs a unit and is above zero.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationFlag)(p), name, usage)
}

// frameLayout is how refresh writes one frame after another.
type frameLayout int

const (
	// screens redraw in place on a terminal (the screen is cleared before
	// each frame) and follow one another after a blank line elsewhere (a
	// pipe, a file, a log).
	screens frameLayout = iota
	// records (one JSON object per line) are appended as they are: never a
	// cleared screen nor a blank line, so the output stays JSON Lines.
	records
)

// refresh calls draw at once, then every interval, until ctx ends; it
// returns nil then. Each frame is drawn into a buffer and written whole, as
// layout says. A frame interrupted by the end of ctx is not written. An
// error from draw ends the loop.
func refresh(ctx context.Context, out io.Writer, interval time.Duration, layout frameLayout, draw func(ctx context.Context, w io.Writer) error) error {
	tty := layout == screens && isTerminal(out)
	var buf bytes.Buffer
	for n := 0; ; n++ {
		if n > 0 && !sleep(ctx, interval) {
			return nil
		}
		buf.Reset()
		err := draw(ctx, &buf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case tty:
			_, err = io.WriteString(out, clearScreen)
		case layout == screens && n > 0:
			_, err = io.WriteString(out, "\n")
		}
		if err == nil {
			_, err = out.Write(buf.Bytes())
		}
		if err != nil {
			return fmt.Errorf("write frame: %w", err)
		}
	}
}

// sleep waits d, or until ctx ends: false then.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
