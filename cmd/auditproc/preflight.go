package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redisconn"
)

// preflight is what `run` checks before it touches Redis, and all that
// `config check` checks: one function, so the two cannot disagree. It reads
// the configuration (file, AUDITPROC_ environment, flags), the HMAC keyring,
// the Redis client's settings (URL, TLS files) and, with loadPlugins, loads
// every plugin as run does. Every problem is reported at once.
type preflight struct {
	cfg      config.Config
	origins  config.Origins
	keys     *integrity.Keyring
	rdb      redis.UniversalClient // not connected yet
	mode     redisconn.Mode        // how rdb reaches Redis
	pipeline *host.Pipeline        // nil without loadPlugins

	// For run: the flags to load the configuration again on a reload
	// (nil: no reloads), and whether to watch the files.
	cf    *configFlags
	watch bool
	hup   <-chan os.Signal
	// force skips run's keyring check against the stream's newest entries.
	force bool
}

// close releases what preflight opened (the pipeline and the Redis client).
func (p *preflight) close(ctx context.Context) {
	if p.pipeline != nil {
		_ = p.pipeline.Close(context.WithoutCancel(ctx))
	}
	if p.rdb != nil {
		_ = p.rdb.Close()
	}
}

// runPreflight runs the checks. On error the result is nil and the error
// (a usageError, exit 2) joins one problem per line, each saying where the
// value came from; nothing stays open.
func runPreflight(ctx context.Context, cf *configFlags, withPlugins bool, logger func(*config.Config) *slog.Logger) (*preflight, error) {
	p := &preflight{}
	cfg, origins, err := cf.loadOrigins(false)
	p.cfg, p.origins = cfg, origins
	problems := config.Problems(err)
	broken := map[int]bool{} // plugins whose entry is already wrong
	redisBroken := false
	sinkBroken := map[string]bool{} // sinks whose entry is already wrong
	for _, e := range problems {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			var i int
			if _, err := fmt.Sscanf(fe.Key, "plugins[%d]", &i); err == nil {
				broken[i] = true
			}
			redisBroken = redisBroken || strings.HasPrefix(fe.Key, "redis.")
			if rest, ok := strings.CutPrefix(fe.Key, "sinks."); ok {
				sinkBroken[strings.SplitN(rest, ".", 2)[0]] = true
			} else if rest, ok := strings.CutPrefix(fe.Key, "sinks["); ok {
				sinkBroken[strings.SplitN(rest, "]", 2)[0]] = true
			}
		}
	}
	if keys, err := integrity.LoadKeyring(os.Getenv); err != nil {
		problems = append(problems, err)
	} else {
		p.keys = keys
	}
	if !redisBroken {
		rdb, mode, err := redisconn.New(&p.cfg)
		if err != nil {
			problems = append(problems, &config.FieldError{Origin: origins.Of("redis").String(), Msg: err.Error()})
		} else {
			p.rdb, p.mode = rdb, mode
		}
		// A stream layout that cannot work in the Redis mode (keys of one
		// commit in different cluster slots) would fail every commit.
		if err := redisconn.CheckLayout(&p.cfg); err != nil {
			var fe *config.FieldError
			if errors.As(err, &fe) {
				fe.Origin = origins.Of(fe.Key).String()
				problems = append(problems, fe)
			} else {
				problems = append(problems, err)
			}
		}
	}
	// External sinks: their secrets and TLS files must be readable; nothing
	// connects (run connects on the first write).
	for _, name := range slices.Sorted(maps.Keys(p.cfg.Sinks)) {
		s := p.cfg.Sinks[name]
		if !s.External() || sinkBroken[name] {
			continue
		}
		dest, err := s.OpenExternal(name, slog.New(slog.DiscardHandler))
		if err != nil {
			problems = append(problems, &config.FieldError{Key: "sinks." + name, Origin: origins.Of("sinks." + name).String(), Msg: err.Error()})
			continue
		}
		_ = dest.Close()
	}
	if withPlugins && len(p.cfg.Plugins) > 0 {
		var lg *slog.Logger
		if logger != nil {
			lg = logger(&p.cfg)
		} else {
			lg = slog.New(slog.DiscardHandler)
		}
		load := p.cfg
		load.Plugins = nil
		var index []int
		for i, pl := range p.cfg.Plugins {
			if !broken[i] {
				load.Plugins = append(load.Plugins, pl)
				index = append(index, i)
			}
		}
		plugins, errs := loadPlugins(ctx, &load, lg)
		if ctx.Err() != nil {
			// Stopped (SIGTERM, SIGINT) while loading: no plugin is at
			// fault, and nothing was read.
			closePlugins(context.WithoutCancel(ctx), plugins)
			p.close(context.WithoutCancel(ctx))
			return nil, ctx.Err()
		}
		for j, err := range errs {
			if err != nil {
				i := index[j]
				problems = append(problems, &config.FieldError{
					Origin: origins.Of(fmt.Sprintf("plugins[%d]", i)).String(),
					Msg:    fmt.Sprintf("plugins[%d] (%s): %v", i, p.cfg.Plugins[i].Name, err),
				})
			}
		}
		if len(problems) == 0 {
			p.pipeline = host.NewPipeline(plugins...)
		} else {
			closePlugins(ctx, plugins)
		}
	}
	if len(problems) > 0 {
		p.close(ctx)
		return nil, usageError{fmt.Errorf("%w:\n%w", config.ErrInvalid, errors.Join(problems...))}
	}
	return p, nil
}

// printProblems writes each problem of err on its own line.
func printProblems(w io.Writer, what string, err error) {
	var ue usageError
	if errors.As(err, &ue) {
		err = ue.err
	}
	problems := config.Problems(err)
	noun := "problems"
	if len(problems) == 1 {
		noun = "problem"
	}
	fmt.Fprintf(w, "%s: %d %s:\n", what, len(problems), noun)
	for _, e := range problems {
		fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e.Error(), "\n", "\n    "))
	}
}
