package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/auditproc/auditproc/internal/config"
)

func configCommand() *command {
	return &command{
		name:    "config",
		summary: "configuration tools",
		subs:    []*command{configCheckCommand()},
	}
}

func configCheckCommand() *command {
	var skipPlugins bool
	return &command{
		name:    "check",
		summary: "validate a plugins.yaml (with AUDITPROC_ environment) without touching Redis",
		usage:   "[--skip-plugins] FILE",
		examples: `  auditproc config check plugins.yaml
  AUDITPROC_CONSUMER_WORKERS=4 auditproc config check /etc/auditproc/plugins.yaml

Every plugin is loaded as 'run' would load it (digest pin, ABI checks, its
own check of its config), unless --skip-plugins is given.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&skipPlugins, "skip-plugins", false, "check the file only; do not load the plugins")
		},
		run: func(ctx context.Context, io stdio, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usagef("config check takes one FILE argument, got %d", len(args))
			}
			cfg, err := config.Load(config.Source{File: args[0], Getenv: os.Getenv})
			if err != nil {
				return usageError{err}
			}
			if !skipPlugins {
				pipeline, err := loadPipeline(ctx, &cfg, slog.New(slog.DiscardHandler))
				if err != nil {
					return err
				}
				_ = pipeline.Close(ctx)
			}
			// External sinks: their secrets and TLS files must be readable
			// (nothing connects).
			sinks, err := openSinks(&cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				return usageError{err}
			}
			for _, s := range sinks {
				if s.Dest != nil {
					_ = s.Dest.Close()
				}
			}
			printConfigSummary(io, args[0], &cfg)
			return nil
		},
	}
}

func printConfigSummary(io stdio, file string, cfg *config.Config) {
	fmt.Fprintf(io.out, "%s: ok\n", file)
	fmt.Fprintf(io.out, "  stream %s, group %s, consumer %s\n", cfg.Stream.Name, cfg.Stream.Group, cfg.Stream.Consumer)
	fmt.Fprintf(io.out, "  %d workers, batch %d, reclaim after %s, dead-letter after %d deliveries to %s\n",
		cfg.Consumer.Workers, cfg.Consumer.BatchSize, cfg.Reclaim.MinIdle, cfg.Reclaim.MaxDeliveries, cfg.DeadLetter.Stream)
	fmt.Fprintln(io.out, "  pipeline:")
	for i, p := range cfg.Plugins {
		extra := ""
		if len(p.Sinks) > 0 {
			extra = ", emits to " + strings.Join(p.Sinks, ", ")
		}
		if p.Trusted {
			extra += ", trusted (no deadline guard)"
		}
		fmt.Fprintf(io.out, "    %d. %s (%s), deadline %s, memory %d MiB%s\n", i+1, p.Name, p.Path, p.Deadline, uint64(p.MemoryLimit)>>20, extra)
	}
}
