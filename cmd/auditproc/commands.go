package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one node of the command tree: either a leaf with run, or a group
// with sub-commands.
type command struct {
	name     string
	summary  string
	usage    string // arguments after the command path, e.g. "[flags] FILE.wasm"
	examples string
	flags    func(fs *flag.FlagSet) // registers the command's flags; nil for none
	run      func(ctx context.Context, io stdio, fs *flag.FlagSet, args []string) error
	subs     []*command
	// rawArgs hands every argument to run unparsed (__complete).
	rawArgs bool
	// hidden leaves the command out of help (__complete).
	hidden bool
}

// root is the command tree. Each file cmd_*.go adds its commands in init-free
// style through the constructors listed here.
func root() *command {
	return &command{
		name:    "auditproc",
		summary: "verify signed audit events from Redis and run them through sandboxed Wasm plugins",
		subs:    rootCommands(),
	}
}

func run(ctx context.Context, args []string, io stdio) error {
	return dispatch(ctx, root(), nil, args, io)
}

func dispatch(ctx context.Context, c *command, path []string, args []string, sio stdio) error {
	path = append(path, c.name)
	if len(c.subs) > 0 {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			printGroupHelp(sio.out, c, path)
			if len(args) == 0 {
				return silentUsage
			}
			return nil
		}
		for _, s := range c.subs {
			if s.name == args[0] {
				return dispatch(ctx, s, path, args[1:], sio)
			}
		}
		printGroupHelp(sio.err, c, path)
		return usagef("unknown command %q for %q", args[0], strings.Join(path, " "))
	}
	if c.rawArgs {
		return c.run(ctx, sio, nil, args)
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if c.flags != nil {
		c.flags(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			printLeafHelp(sio.out, c, fs, path)
			return nil
		}
		return usagef("%s: %v (see --help)", strings.Join(path, " "), err)
	}
	return c.run(ctx, sio, fs, pos)
}

// parseInterspersed parses flags anywhere on the line, before or after the
// positional arguments ("dlq replay ID --config X" as well as
// "dlq replay --config X ID"); after "--" every argument is positional. The
// flag package alone stops at the first positional argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func printGroupHelp(w io.Writer, c *command, path []string) {
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s <command> [flags]\n\nCommands:\n", strings.Join(path, " "), c.summary, strings.Join(path, " "))
	for _, s := range c.subs {
		if !s.hidden {
			fmt.Fprintf(w, "  %-12s %s\n", s.name, s.summary)
		}
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags and examples.\n", strings.Join(path, " "))
}

func printLeafHelp(w io.Writer, c *command, fs *flag.FlagSet, path []string) {
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s %s\n", strings.Join(path, " "), c.summary, strings.Join(path, " "), c.usage)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if c.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(c.examples, "\n"))
	}
}
