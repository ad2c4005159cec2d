package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host/internal/meter"
	"github.com/auditproc/auditproc/host/internal/precheck"
)

const wasiModule = wasi_snapshot_preview1.ModuleName

// deniedWASI are WASI functions wazero implements that a plugin may not import.
var deniedWASI = []string{"sock_accept", "sock_recv", "sock_send", "sock_shutdown"}

// Import is one function a module imports.
type Import struct {
	Module, Name string
}

func (i Import) String() string { return i.Module + "." + i.Name }

// ModuleInfo describes a module as `auditproc plugin check` shows it.
type ModuleInfo struct {
	SHA256     string   // hex digest of the module's bytes
	ABIVersion int      // from the auditproc_abi_vN marker; 0 when there is none
	Exports    []string // exported function and memory names, sorted
	Imports    []Import // imported functions, in module order
	Problems   []error  // why Load would refuse it; each wraps ErrABIVersion, ErrExports or ErrImports
}

// Inspect checks wasm against the host's limits (ErrModuleRefused), compiles
// it (with wazero's interpreter, which only validates) and reports what Load
// would check. The error is for a module that does not
// even decode; a module that decodes but breaks the ABI has Problems.
func Inspect(ctx context.Context, wasm []byte) (ModuleInfo, error) {
	if err := precheck.Check(wasm); err != nil {
		return ModuleInfo{}, err
	}
	if err := checkShape(wasm); err != nil {
		return ModuleInfo{}, err
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	offered, err := offerImports(ctx, rt)
	if err != nil {
		return ModuleInfo{}, err
	}
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return ModuleInfo{}, fmt.Errorf("host: compile module: %w", err)
	}
	defer compiled.Close(ctx)
	info := describe(compiled, offered)
	info.SHA256 = digest(wasm)
	return info, nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// parseDigest accepts "hex" or "sha256:hex" and returns the lowercase hex.
func parseDigest(s string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("sha256 %q is not 64 hex digits", s)
	}
	return h, nil
}

type signature struct{ params, results []api.ValueType }

func (s signature) String() string {
	names := func(ts []api.ValueType) string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(out, ", ") + ")"
	}
	return names(s.params) + " -> " + names(s.results)
}

func (s signature) equal(d api.FunctionDefinition) bool {
	return slices.Equal(s.params, d.ParamTypes()) && slices.Equal(s.results, d.ResultTypes())
}

func sigOf(d api.FunctionDefinition) signature {
	return signature{d.ParamTypes(), d.ResultTypes()}
}

var (
	i32 = api.ValueTypeI32
	// exportSigs are the function exports of the ABI and whether each is required.
	exportSigs = []struct {
		name     string
		sig      signature
		required bool
	}{
		{abi.ExportAlloc, signature{[]api.ValueType{i32}, []api.ValueType{i32}}, true},
		{abi.ExportProcess, signature{[]api.ValueType{i32, i32}, []api.ValueType{i32}}, true},
		{abi.ExportInit, signature{[]api.ValueType{i32, i32}, []api.ValueType{i32}}, false},
		{abi.ExportInitialize, signature{}, false},
		{abi.ExportVersion, signature{}, true},
		{abi.ExportAllocReuse, signature{}, false},
	}
)

// offerImports instantiates, in rt, the host modules a plugin may import
// from (WASI and auditproc) and returns the signature of every function a
// plugin may import.
func offerImports(ctx context.Context, rt wazero.Runtime) (map[Import]signature, error) {
	wasi, err := wasiModuleBuilder(ctx, rt)
	if err == nil {
		_, err = wasi.Instantiate(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("host: instantiate WASI: %w", err)
	}
	if _, err := hostModule(rt).Instantiate(ctx); err != nil {
		return nil, fmt.Errorf("host: instantiate the %s host module: %w", abi.Module, err)
	}
	offered := map[Import]signature{}
	for _, mod := range []string{wasiModule, abi.Module} {
		for name, def := range rt.Module(mod).ExportedFunctionDefinitions() {
			if mod == wasiModule && slices.Contains(deniedWASI, name) {
				continue
			}
			offered[Import{mod, name}] = sigOf(def)
		}
	}
	return offered, nil
}

// describe checks a compiled module against the ABI.
func describe(compiled wazero.CompiledModule, offered map[Import]signature) ModuleInfo {
	var info ModuleInfo
	problem := func(sentinel error, format string, args ...any) {
		info.Problems = append(info.Problems, fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...)))
	}

	exports := compiled.ExportedFunctions()
	for name := range exports {
		info.Exports = append(info.Exports, name)
	}
	for name := range compiled.ExportedMemories() {
		info.Exports = append(info.Exports, name)
	}
	sort.Strings(info.Exports)

	// The version marker first: a module for another version fails for that
	// reason, not for the exports that version may name differently.
	var others []int
	for name := range exports {
		if v, ok := strings.CutPrefix(name, abi.VersionExportPrefix); ok {
			if n, err := strconv.Atoi(v); err == nil && n != abi.Version {
				others = append(others, n)
			}
		}
	}
	sort.Ints(others)
	_, hasVersion := exports[abi.ExportVersion]
	switch {
	case hasVersion:
		info.ABIVersion = abi.Version
	case len(others) > 0:
		info.ABIVersion = others[len(others)-1]
		problem(ErrABIVersion, "module is built for ABI v%d; this host speaks v%d", info.ABIVersion, abi.Version)
		return info
	default:
		problem(ErrABIVersion, "module exports no %s marker, so it is not built for the auditproc plugin ABI v%d (build it with the auditproc SDK or export the marker)", abi.ExportVersion, abi.Version)
	}

	if _, ok := compiled.ExportedMemories()[abi.ExportMemory]; !ok {
		problem(ErrExports, "module does not export its memory as %q", abi.ExportMemory)
	}
	for _, want := range exportSigs {
		def, ok := exports[want.name]
		switch {
		case !ok && want.required:
			problem(ErrExports, "module does not export the function %s %s", want.name, want.sig)
		case ok && !want.sig.equal(def):
			problem(ErrExports, "export %s has signature %s; the ABI wants %s", want.name, sigOf(def), want.sig)
		}
	}
	if _, ok := exports[abi.ExportStart]; ok {
		problem(ErrExports, "module exports %s: it is a command module; build it as a reactor (-buildmode=c-shared for Go, -mexec-model=reactor for clang)", abi.ExportStart)
	}

	for _, def := range compiled.ImportedFunctions() {
		mod, name, _ := def.Import()
		imp := Import{mod, name}
		info.Imports = append(info.Imports, imp)
		want, ok := offered[imp]
		switch {
		case !ok && mod == wasiModule && slices.Contains(deniedWASI, name):
			problem(ErrImports, "module imports %s: plugins get no network", imp)
		case !ok && (mod == wasiModule || mod == abi.Module):
			problem(ErrImports, "module imports %s, which the host does not provide", imp)
		case !ok:
			problem(ErrImports, "module imports %s from the unknown module %q (a plugin may import only %q and %q)", imp, mod, abi.Module, wasiModule)
		case !want.equal(def):
			problem(ErrImports, "module imports %s with signature %s; the host provides %s", imp, sigOf(def), want)
		}
	}
	for _, def := range compiled.ImportedMemories() {
		mod, name, _ := def.Import()
		problem(ErrImports, "module imports the memory %s.%s: a plugin must define and export its own memory", mod, name)
	}
	return info
}

// Load reads, pins, compiles and checks a plugin, then instantiates it once
// (running _initialize and auditproc_init) and keeps that instance for the
// first worker. Close the plugin when done.
func Load(ctx context.Context, spec PluginSpec, cfg Config) (*Plugin, error) {
	spec = spec.withDefaults()
	fail := func(err error) (*Plugin, error) { return nil, &LoadError{Plugin: spec.Name, Err: err} }
	if err := spec.Validate(); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrInvalidSpec, err))
	}

	wasm := spec.Wasm
	if spec.Path != "" {
		var err error
		if wasm, err = os.ReadFile(spec.Path); err != nil {
			return fail(err)
		}
	}
	sum := digest(wasm)
	if spec.SHA256 != "" {
		pinned, _ := parseDigest(spec.SHA256)
		if pinned != sum {
			where := "module"
			if spec.Path != "" {
				where = spec.Path
			}
			return fail(fmt.Errorf("%w: %s has sha256 %s, plugins.yaml pins %s", ErrDigestMismatch, where, sum, pinned))
		}
	}

	// Nothing reaches wazero before it is known to be bounded: wazero sizes
	// its allocations by the counts a module declares.
	if err := precheck.Check(wasm); err != nil {
		return fail(err)
	}
	wasm = precheck.BoundTables(wasm)

	c, err := compilePlugin(ctx, spec, cfg, wasm, sum)
	if err != nil {
		return fail(err)
	}
	p := newPlugin(spec, cfg, sum, c)
	ok := false
	defer func() {
		if !ok {
			_ = p.Close(context.Background())
		}
	}()
	if info := describe(c.module, c.offered); len(info.Problems) > 0 {
		return fail(errors.Join(info.Problems...))
	}

	p.start()
	inst, err := p.newInstance(ctx)
	if err != nil {
		return fail(err)
	}
	p.putIdle(inst)
	ok = true
	return p, nil
}

// meterPeriod is how many loop iterations and function entries a metered
// guest runs between two checks of its deadline (see host/internal/meter).
const meterPeriod = 1 << 12

// compiledPlugin is a plugin's runtime and compiled module.
type compiledPlugin struct {
	rt      wazero.Runtime
	cache   wazero.CompilationCache // the plugin's own, or nil
	shared  *Cache                  // the shared one it holds a reference of, or nil
	module  wazero.CompiledModule
	offered map[Import]signature
	guard   Guard
}

// checkShape refuses a module the meter refuses: one whose control
// structures nest too deep to compile within bounds (meter.ErrTooComplex),
// or one it cannot read through, whose shape is then unknown. Trusted
// plugins and plugin check's static part go through it too. A malformed
// module is left to wazero's validation, whose errors are the ones to
// report.
func checkShape(wasm []byte) error {
	_, err := meter.Instrument(wasm, meterPeriod)
	if errors.Is(err, meter.ErrMalformed) {
		return nil
	}
	return meterRefusal(err)
}

// meterRefusal says why the meter's refusal err refuses the module.
func meterRefusal(err error) error {
	if err == nil || errors.Is(err, meter.ErrTooComplex) {
		return err
	}
	return fmt.Errorf("%w: the deadline guard cannot meter this module (%v); it would run unguarded", ErrModuleRefused, err)
}

// compilePlugin compiles wasm in a runtime of its own: instrumented by the
// meter when the plugin is guarded, plain when trusted. A guarded module the
// meter cannot instrument is refused: nothing else stops every way a guest
// can run on (recursion without loops, straight-line bulk instructions).
func compilePlugin(ctx context.Context, spec PluginSpec, cfg Config, wasm []byte, sum string) (*compiledPlugin, error) {
	if spec.Trusted {
		if err := checkShape(wasm); err != nil {
			return nil, err
		}
		return compileWith(ctx, spec, cfg, wasm, GuardOff)
	}
	cached := meteredPath(cfg.dir(), sum)
	if metered, err := os.ReadFile(cached); err == nil {
		if c, err := compileWith(ctx, spec, cfg, metered, GuardMetered); err == nil {
			return c, nil
		}
		// A damaged cache file: instrument again below and replace it.
	}
	// Only a module valid as written is instrumented (a cached one was
	// validated before it was kept): the rewrite adds a function, a type, a
	// global and a local, and must not turn an invalid reference to one of
	// them into a valid one.
	if err := validate(ctx, wasm); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	metered, err := meter.Instrument(wasm, meterPeriod)
	if err != nil {
		return nil, meterRefusal(err)
	}
	c, err := compileWith(ctx, spec, cfg, metered, GuardMetered)
	if err != nil {
		return nil, fmt.Errorf("compile: the metered module: %w", err)
	}
	saveMetered(cached, metered) // only what compiled is kept
	return c, nil
}

// meteredVersion names the meter's output format in the cache: change it when
// the instrumentation changes.
const meteredVersion = "meter6"

// meteredPath is where the instrumented module of the module with SHA-256
// sum is kept in the compilation cache directory ("" without one):
// instrumenting a standard-Go module costs 10–20 ms at every start
// otherwise. The directory holds wazero's compiled native code too, so it is
// already trusted as much as the modules themselves.
func meteredPath(dir, sum string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, fmt.Sprintf("%s-%d-%s.wasm", meteredVersion, meterPeriod, sum))
}

// saveMetered writes the instrumented module to path, whole or not at all;
// a cache that cannot be written only costs the next start some time.
func saveMetered(path string, metered []byte) {
	if path == "" || os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".meter-*")
	if err != nil {
		return
	}
	_, err = tmp.Write(metered)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
}

// close closes the runtime, then the cache it used (or its reference).
func (c *compiledPlugin) close(ctx context.Context) error {
	err := c.rt.Close(ctx)
	if c.cache != nil {
		_ = c.cache.Close(ctx)
	}
	if c.shared != nil {
		_ = c.shared.release(ctx)
	}
	return err
}

// validate compiles wasm with wazero's interpreter, which checks a module
// as the compiler does without generating code.
func validate(ctx context.Context, wasm []byte) error {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	m, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return err
	}
	return m.Close(ctx)
}

func compileWith(ctx context.Context, spec PluginSpec, cfg Config, wasm []byte, guard Guard) (_ *compiledPlugin, err error) {
	c := &compiledPlugin{guard: guard}
	var cache wazero.CompilationCache
	switch {
	case cfg.Cache != nil:
		if !cfg.Cache.acquire() {
			return nil, errors.New("compilation cache: closed")
		}
		c.shared, cache = cfg.Cache, cfg.Cache.c
	default:
		if c.cache, err = newCompilationCache(cfg.CacheDir); err != nil {
			return nil, err
		}
		cache = c.cache
	}
	c.rt = wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(spec.memoryLimitPages()))
	defer func() {
		if err != nil {
			c.close(context.Background())
		}
	}()
	if c.offered, err = offerImports(ctx, c.rt); err != nil {
		return nil, err
	}
	if guard == GuardMetered {
		if err := offerMeter(ctx, c.rt); err != nil {
			return nil, err
		}
		c.offered[Import{meter.ImportModule, meter.ImportName}] = signature{}
	}
	if c.module, err = c.rt.CompileModule(ctx, wasm); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return c, nil
}
