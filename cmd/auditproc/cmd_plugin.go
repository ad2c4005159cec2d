package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/config"
)

func pluginCommand() *command {
	return &command{
		name:    "plugin",
		summary: "check a Wasm plugin against the ABI, or run events through it offline",
		subs:    []*command{pluginCheckCommand(), pluginTestCommand()},
	}
}

// pluginFlags are the flags shared by plugin check and plugin test: what a
// plugin gets in production from its plugins.yaml entry.
type pluginFlags struct {
	name        string
	config      string
	sinks       stringList
	deadline    time.Duration
	memoryLimit byteSize
	trusted     bool
}

func (f *pluginFlags) register(fs *flag.FlagSet) {
	// run's defaults (plugins.yaml's), so a plugin passes here only when
	// it would in production.
	f.deadline = config.DefaultPluginDeadline
	f.memoryLimit = byteSize(config.DefaultPluginMemory)
	fs.StringVar(&f.name, "name", "", "the plugin's name in results and logs (default: the file name without .wasm)")
	fs.StringVar(&f.config, "config", "", "YAML or JSON `FILE` holding the plugin's configuration mapping, handed to auditproc_init as JSON (default {})")
	fs.Var(&f.sinks, "sink", "grant the sink `NAME` to the plugin, as sinks: in plugins.yaml (repeatable)")
	durationVar(fs, &f.deadline, "deadline", config.DefaultPluginDeadline, "deadline of one event's call into the plugin")
	fs.Var(&f.memoryLimit, "memory-limit", "cap on the plugin's linear memory, in bytes or with a KiB, MiB or GiB suffix")
	fs.BoolVar(&f.trusted, "trusted", false, "turn the deadline guard off, as trusted: true in plugins.yaml (a plugin that never returns then hangs the command)")
}

// spec builds the PluginSpec for file, reading the configuration file.
func (f *pluginFlags) spec(file string) (host.PluginSpec, error) {
	name := f.name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(file), ".wasm")
	}
	spec := host.PluginSpec{
		Name:             name,
		Path:             file,
		Sinks:            f.sinks,
		Deadline:         f.deadline,
		MemoryLimitBytes: uint64(f.memoryLimit),
		Trusted:          f.trusted,
	}
	if f.deadline <= 0 {
		return spec, usagef("--deadline must be positive, got %s", f.deadline)
	}
	if f.memoryLimit == 0 {
		return spec, usagef("--memory-limit must be positive")
	}
	if f.config != "" {
		cfg, err := readPluginConfig(f.config)
		if err != nil {
			return spec, usageError{err}
		}
		spec.Config = cfg
	}
	return spec, nil
}

// readPluginConfig reads a YAML or JSON file holding one mapping and returns
// its JSON text, as auditproc_init receives the config: mapping of plugins.yaml.
func readPluginConfig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plugin configuration: %w", err)
	}
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("plugin configuration %s is neither YAML nor JSON: %w", path, err)
	}
	if v == nil {
		return []byte("{}"), nil // an empty file, like an absent config:
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("plugin configuration %s must be a mapping (key: value), not a %s", path, yamlKind(v))
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("plugin configuration %s cannot be written as JSON: %w", path, err)
	}
	return out, nil
}

func yamlKind(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "string"
	case map[any]any:
		return "mapping with non-string keys"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func pluginCheckCommand() *command {
	var f pluginFlags
	return &command{
		name:    "check",
		summary: "validate a Wasm module against the plugin ABI and show what it exports and imports",
		usage:   "[flags] FILE.wasm",
		examples: `  auditproc plugin check build/wasm/redact.wasm
  auditproc plugin check --config redact.yaml redact.wasm

Checks the module's ABI version marker, exports and imports, then loads it as
auditproc run would (instantiation and auditproc_init with --config, default
{}). Exits 0 when the module is loadable, 2 with the reason otherwise.`,
		flags: f.register,
		run: func(ctx context.Context, sio stdio, fs *flag.FlagSet, args []string) error {
			args, err := positionals(fs, args)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usagef("plugin check needs exactly one FILE.wasm argument, got %d (see --help)", len(args))
			}
			return pluginCheck(ctx, sio, &f, args[0])
		},
	}
}

func pluginCheck(ctx context.Context, sio stdio, f *pluginFlags, file string) error {
	spec, err := f.spec(file)
	if err != nil {
		return err
	}
	wasm, err := os.ReadFile(file)
	if err != nil {
		return usagef("plugin check: %v", err)
	}
	info, err := host.Inspect(ctx, wasm)
	if err != nil {
		fmt.Fprintf(sio.out, "file:     %s\nsize:     %d bytes\nresult:   refused\n", file, len(wasm))
		if errors.Is(err, host.ErrModuleRefused) {
			return usagef("plugin check: %s: %v", file, err)
		}
		return usagef("plugin check: %s is not a valid WebAssembly module: %v", file, err)
	}
	w := sio.out
	fmt.Fprintf(w, "file:     %s\n", file)
	fmt.Fprintf(w, "size:     %d bytes\n", len(wasm))
	fmt.Fprintf(w, "sha256:   %s\n", info.SHA256)
	if info.ABIVersion == 0 {
		fmt.Fprintf(w, "abi:      none (no auditproc_abi_vN export)\n")
	} else {
		fmt.Fprintf(w, "abi:      v%d\n", info.ABIVersion)
	}
	fmt.Fprintf(w, "exports:  %s\n", listOrNone(info.Exports))
	imports := make([]string, len(info.Imports))
	for i, imp := range info.Imports {
		imports[i] = imp.String()
	}
	fmt.Fprintf(w, "imports:  %s\n", listOrNone(imports))
	if len(info.Problems) > 0 {
		fmt.Fprintf(w, "result:   refused\n")
		msgs := make([]string, len(info.Problems))
		for i, p := range info.Problems {
			msgs[i] = p.Error()
		}
		return usagef("plugin check: %s is not loadable: %s", file, strings.Join(msgs, "; "))
	}
	// The static checks passed; load it as auditproc run would, which also
	// runs _initialize and auditproc_init within the limits.
	p, err := host.Load(ctx, spec, pluginHostConfig(sio))
	if err != nil {
		fmt.Fprintf(w, "result:   refused\n")
		return usagef("plugin check: %s is not loadable: %v", file, err)
	}
	defer p.Close(context.Background())
	fmt.Fprintf(w, "guard:    %s\n", p.Guard())
	fmt.Fprintf(w, "result:   loadable\n")
	return nil
}

// pluginHostConfig gives plugin check and plugin test the plugin's log
// lines (its log calls, stdout and stderr) on standard error, as run
// logs them, in text.
func pluginHostConfig(sio stdio) host.Config {
	return host.Config{Logger: newLogger(sio.err, "text", "info")}
}

// positionals parses the flags that follow positional arguments (the flag
// package stops at the first one), so "plugin test FILE.wasm --events x"
// works as well as "plugin test --events x FILE.wasm".
func positionals(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		pos = append(pos, args[0])
		if err := fs.Parse(args[1:]); err != nil {
			return nil, usagef("%s: %v (see --help)", fs.Name(), err)
		}
		args = fs.Args()
	}
	return pos, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	*l = append(*l, s)
	return nil
}

// byteSize is a size flag: "1048576", "64MiB", "512KiB", "1GiB".
type byteSize uint64

func (b *byteSize) String() string {
	n := uint64(*b)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}
func (b *byteSize) Set(s string) error {
	num, unit := s, uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, unit = n, u.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", s)
	}
	*b = byteSize(n * unit)
	return nil
}

func pluginTestCommand() *command {
	var f pluginFlags
	var events string
	return &command{
		name:    "test",
		summary: "run events through a Wasm plugin offline and print its verdict on each",
		usage:   "[flags] FILE.wasm",
		examples: `  auditproc plugin test redact.wasm --events events.jsonl
  auditproc plugin test --config redact.yaml --sink alerts detect.wasm < events.jsonl
  echo '{"event_id":"e1","user":"alice"}' | auditproc plugin test noop.wasm

Reads one JSON object per line (blank lines are skipped) and runs each through
the plugin with the limits and sandbox of auditproc run: the same deadline,
memory cap, granted sinks and a fresh instance after a trap. Nothing is read
from or written to Redis. Prints one JSON object per input line, in order:

  {"line":1,"event_id":"e1","verdict":"ok","plugin":"redact","message":"",
   "event":{...},"emits":[{"sink":"alerts","event":{...}}],"duration_us":42}

"event" is the event as the plugin left it, "emits" what it emitted (kept only
when the verdict is ok, as in production), "duration_us" the time spent in the
plugin. When the host imposed the verdict (trap, deadline, proc_exit, invalid
verdict) the object also has "error". A line that is not a JSON object gets
{"line":N,"error":"..."} and the run goes on. Exits 0 when every line was
read, whatever the verdicts; 2 when the plugin does not load or on usage
errors.`,
		flags: func(fs *flag.FlagSet) {
			f.register(fs)
			fs.StringVar(&events, "events", "-", "JSON-lines `FILE` of events, or - for standard input")
		},
		run: func(ctx context.Context, sio stdio, fs *flag.FlagSet, args []string) error {
			args, err := positionals(fs, args)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usagef("plugin test needs exactly one FILE.wasm argument, got %d (see --help)", len(args))
			}
			return pluginTest(ctx, sio, &f, args[0], events)
		},
	}
}

// testLine is one line of plugin test's output.
type testLine struct {
	Line       int             `json:"line"`
	EventID    *string         `json:"event_id,omitempty"`
	Verdict    string          `json:"verdict,omitempty"`
	Plugin     string          `json:"plugin,omitempty"`
	Message    *string         `json:"message,omitempty"`
	Error      string          `json:"error,omitempty"`
	Event      json.RawMessage `json:"event,omitempty"`
	Emits      []testEmit      `json:"emits,omitempty"`
	DurationUS *int64          `json:"duration_us,omitempty"`
}

type testEmit struct {
	Sink  string          `json:"sink"`
	Event json.RawMessage `json:"event"`
}

func pluginTest(ctx context.Context, sio stdio, f *pluginFlags, file, events string) error {
	spec, err := f.spec(file)
	if err != nil {
		return err
	}
	in := sio.in
	if events != "-" {
		fh, err := os.Open(events)
		if err != nil {
			return usagef("plugin test: %v", err)
		}
		defer fh.Close()
		in = fh
	}
	p, err := host.Load(ctx, spec, pluginHostConfig(sio))
	if err != nil {
		return usagef("plugin test: %s is not loadable: %v", file, err)
	}
	pipe := host.NewPipeline(p)
	defer pipe.Close(context.Background())
	w, err := pipe.NewWorker(ctx)
	if err != nil {
		return fmt.Errorf("plugin test: %w", err)
	}
	defer w.Release()

	enc := json.NewEncoder(sio.out)
	enc.SetEscapeHTML(false)
	r := bufio.NewReader(in)
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, readErr := r.ReadBytes('\n')
		if readErr != nil && readErr != io.EOF {
			return fmt.Errorf("plugin test: read events: %w", readErr)
		}
		if data := bytes.TrimSpace(line); len(data) > 0 {
			if err := enc.Encode(testEvent(ctx, w, n, data)); err != nil {
				return fmt.Errorf("plugin test: write results: %w", err)
			}
		}
		if readErr == io.EOF {
			return nil
		}
	}
}

// testEvent runs one input line through the worker.
func testEvent(ctx context.Context, w *host.Worker, n int, data []byte) testLine {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return testLine{Line: n, Error: fmt.Sprintf("line %d is not a JSON object: %s", n, notObject(data, err))}
	}
	var id string
	_ = json.Unmarshal(fields["event_id"], &id)
	res := w.Process(ctx, host.Event{
		EntryID:    fmt.Sprintf("0-%d", n),
		Stream:     "auditproc-plugin-test",
		EventID:    id,
		Deliveries: 1,
		Data:       data,
	})
	var dur time.Duration
	plugin := res.Plugin
	for _, tm := range res.Timings {
		dur += tm.Duration
		plugin = tm.Plugin
	}
	us := dur.Microseconds()
	out := testLine{
		Line:       n,
		EventID:    &id,
		Verdict:    res.Verdict.String(),
		Plugin:     plugin,
		Message:    &res.Message,
		Event:      rawJSON(res.Event),
		Emits:      []testEmit{},
		DurationUS: &us,
	}
	if res.Err != nil {
		out.Error = res.Err.Error()
	}
	for _, e := range res.Emits {
		out.Emits = append(out.Emits, testEmit{Sink: e.Sink, Event: rawJSON(e.Event)})
	}
	return out
}

// notObject says what a line that is no JSON object is instead.
func notObject(data []byte, err error) string {
	if !json.Valid(data) {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return fmt.Sprintf("invalid JSON at byte %d: %v", syn.Offset, err)
		}
		return fmt.Sprintf("invalid JSON: %v", err)
	}
	switch data[0] {
	case '[':
		return "it is an array"
	case '"':
		return "it is a string"
	case 'n':
		return "it is null"
	case 't', 'f':
		return "it is a boolean"
	}
	return "it is a number"
}

// rawJSON returns b as raw JSON when it is valid JSON, else as a JSON string.
func rawJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return bytes.Clone(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}
