package main

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version from the build info is used.
var version = ""

// rootCommands lists the top-level commands in the order --help shows them.
func rootCommands() []*command {
	return []*command{
		runCommand(),
		emitCommand(),
		statusCommand(),
		dlqCommand(),
		configCommand(),
		pluginCommand(),
		keygenCommand(),
		versionCommand(),
		healthCommand(),
		benchCommand(),
		pipelineTestCommand(),
		verifyCommand(),
	}
}

func versionCommand() *command {
	return &command{
		name:     "version",
		summary:  "print the auditproc version",
		usage:    "",
		examples: "  auditproc version",
		run: func(_ context.Context, io stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("version takes no arguments, got %q", args)
			}
			fmt.Fprintln(io.out, buildVersion())
			return nil
		},
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
