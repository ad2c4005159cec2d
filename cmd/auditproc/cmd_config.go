package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

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
	var (
		cf          *configFlags
		skipPlugins bool
		print       bool
	)
	return &command{
		name:    "check",
		summary: "run every check 'run' makes before it touches Redis, and report every problem at once",
		usage:   "[--config] FILE [--print] [--skip-plugins] [run's flags]",
		examples: `  auditproc config check plugins.yaml
  AUDITPROC_CONSUMER_WORKERS=4 auditproc config check /etc/auditproc/plugins.yaml --workers 8 --print

The checks are run's own, with the same file, AUDITPROC_ environment and flags:
every key and value, unknown keys and unknown AUDITPROC_ variables, durations
with a unit, the HMAC keyring (AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE),
the Redis URL and TLS files, and every plugin loaded as run loads it (digest
pin, ABI, its own check of its config) unless --skip-plugins is given. Each
problem names where its value came from: FILE:LINE, the AUDITPROC_ variable or
the flag. --print shows the effective configuration and the origin of each
value. Exits 0 when run would start, 2 otherwise.`,
		flags: func(fs *flag.FlagSet) {
			cf = runConfigFlags(fs)
			fs.BoolVar(&skipPlugins, "skip-plugins", false, "check the configuration only; do not load the plugins")
			fs.BoolVar(&print, "print", false, "print the effective configuration and where each value came from")
		},
		run: func(ctx context.Context, sio stdio, fs *flag.FlagSet, args []string) error {
			if len(args) > 1 {
				return usagef("config check takes at most one FILE argument, got %d", len(args))
			}
			if len(args) == 1 {
				_ = fs.Set("config", args[0])
			}
			file := *cf.file
			pf, err := runPreflight(ctx, cf, !skipPlugins, nil)
			if err != nil {
				printProblems(sio.err, file, err)
				return silentUsage
			}
			defer pf.close(ctx)
			if print {
				printEffectiveConfig(sio, &pf.cfg, pf.origins)
				return nil
			}
			printConfigSummary(sio, file, &pf.cfg)
			return nil
		},
	}
}

func printConfigSummary(io stdio, file string, cfg *config.Config) {
	fmt.Fprintf(io.out, "%s: ok\n", file)
	fmt.Fprintf(io.out, "  stream %s, group %s, consumer %s\n", cfg.Stream.Name, cfg.Stream.Group, cfg.Stream.Consumer)
	if n := cfg.ShardCount(); n > 1 {
		key := "none: events spread evenly"
		if cfg.Stream.PartitionKey != "" {
			key = cfg.Stream.PartitionKey
		}
		streams := cfg.StreamShards()
		fmt.Fprintf(io.out, "  %d shards: %s ... %s (partition key %s)\n", n, streams[0], streams[n-1], key)
	}
	fmt.Fprintf(io.out, "  %d workers, batch %d, reclaim after %s, dead-letter after %d deliveries to %s\n",
		cfg.Consumer.Workers, cfg.Consumer.BatchSize, cfg.Reclaim.MinIdle, cfg.Reclaim.MaxDeliveries, cfg.DeadLetter.Stream)
	metrics := cfg.Metrics.Address
	if metrics == "" {
		metrics = config.MetricsOff
	}
	fmt.Fprintf(io.out, "  metrics %s\n", metrics)
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

// printEffectiveConfig prints every key of the configuration with its value
// and where the value came from (file:line, AUDITPROC_ variable, flag or
// default). Secrets are not part of it.
func printEffectiveConfig(sio stdio, cfg *config.Config, origins config.Origins) {
	w := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tVALUE\tFROM")
	flattenConfig("", reflect.ValueOf(*cfg), func(key, value string) {
		if key == "metrics.address" && value == "" {
			value = config.MetricsOff
		}
		// Only the key's own origin: a key the file leaves out is a default
		// even inside a section the file has.
		fmt.Fprintf(w, "%s\t%s\t%s\n", key, value, origins[key])
	})
	_ = w.Flush()
}

// flattenConfig calls emit for each scalar of v by dotted key, walking the
// koanf tags as the file is written.
func flattenConfig(prefix string, v reflect.Value, emit func(key, value string)) {
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch {
	case v.Type() == reflect.TypeOf(time.Duration(0)):
		emit(prefix, time.Duration(v.Int()).String())
	case v.Type() == reflect.TypeOf(config.ByteSize(0)):
		emit(prefix, fmt.Sprintf("%d", v.Uint()))
	case v.Kind() == reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			tag := v.Type().Field(i).Tag.Get("koanf")
			if tag == "" || tag == "-" {
				continue
			}
			flattenConfig(join(tag), v.Field(i), emit)
		}
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		for i := 0; i < v.Len(); i++ {
			flattenConfig(fmt.Sprintf("%s[%d]", prefix, i), v.Index(i), emit)
		}
	case v.Kind() == reflect.Map && v.Type().Elem().Kind() == reflect.Struct:
		for _, k := range slices.Sorted(maps.Keys(v.Interface().(map[string]config.Sink))) {
			flattenConfig(join(k), v.MapIndex(reflect.ValueOf(k)), emit)
		}
	case v.Kind() == reflect.Map, v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			emit(prefix, "")
			return
		}
		b, _ := json.Marshal(v.Interface())
		emit(prefix, string(b))
	default:
		emit(prefix, fmt.Sprint(v.Interface()))
	}
}
