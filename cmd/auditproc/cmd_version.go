package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version from the build info is used.
var version = ""

// revision is the source revision, set at build time with -ldflags
// "-X main.revision=…" (the Makefile does); otherwise the build info's
// vcs.revision.
var revision = ""

// rootCommands lists the top-level commands in the order --help shows them.
func rootCommands() []*command {
	return []*command{
		runCommand(),
		emitCommand(),
		spoolCommand(),
		statusCommand(),
		dlqCommand(),
		configCommand(),
		pluginCommand(),
		keygenCommand(),
		versionCommand(),
		healthCommand(),
		benchCommand(),
		pipelineTestCommand(),
		topCommand(),
		completionCommand(),
		completeCommand(),
		verifyCommand(),
	}
}

func versionCommand() *command {
	var asJSON bool
	return &command{
		name:    "version",
		summary: "print the auditproc version, revision, Go and wazero versions",
		usage:   "[--json]",
		examples: `  auditproc version
  auditproc version --json | jq -r .revision`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the build information as one JSON object")
		},
		run: func(_ context.Context, io stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("version takes no arguments, got %q", args)
			}
			bi := readBuildInfo()
			if asJSON {
				return json.NewEncoder(io.out).Encode(bi)
			}
			fmt.Fprintf(io.out, "auditproc %s\n  revision %s\n  go       %s\n  wazero   %s\n", bi.Version, bi.Revision, bi.GoVersion, bi.WazeroVersion)
			return nil
		},
	}
}

// buildInfo is what version prints and auditproc_build_info exports.
type buildInfo struct {
	Version       string `json:"version"`
	Revision      string `json:"revision"`
	GoVersion     string `json:"go_version"`
	WazeroVersion string `json:"wazero_version"`
}

func readBuildInfo() buildInfo {
	bi := buildInfo{Version: buildVersion(), Revision: "unknown", GoVersion: runtime.Version(), WazeroVersion: "unknown"}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				bi.Revision = s.Value
			}
		}
		for _, d := range info.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				bi.WazeroVersion = d.Version
				if d.Replace != nil {
					bi.WazeroVersion = d.Replace.Version
				}
			}
		}
	}
	if revision != "" {
		bi.Revision = revision
	}
	return bi
}

// registerBuildInfo exports auditproc_build_info on reg: always 1, with
// the build's versions as labels.
func registerBuildInfo(reg prometheus.Registerer) {
	bi := readBuildInfo()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "auditproc_build_info",
		Help: "Always 1; the labels say which build runs: version, revision, go_version, wazero_version.",
	}, []string{"version", "revision", "go_version", "wazero_version"})
	g.WithLabelValues(bi.Version, bi.Revision, bi.GoVersion, bi.WazeroVersion).Set(1)
	reg.MustRegister(g)
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
