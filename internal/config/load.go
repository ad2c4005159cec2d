package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable auditproc reads.
const EnvPrefix = "AUDITPROC_"

// Secret environment variables: read by Load (the Redis password) or by the
// keyring loader (HMAC keys); never accepted in the YAML file.
const (
	EnvRedisPassword = "AUDITPROC_REDIS_PASSWORD"
)

// secretKeys are keys a user may be tempted to write in the YAML file, with
// where the secret goes instead.
var secretKeys = map[string]string{
	"redis.password": "set " + EnvRedisPassword + " or redis.password_file",
	"keys":           "set AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE",
	"hmac":           "set AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE",
	"hmac_keys":      "set AUDITPROC_HMAC_KEYS or AUDITPROC_HMAC_KEYS_FILE",
}

// Source says where Load reads from. Every part is optional.
type Source struct {
	// File is the YAML configuration (plugins.yaml); empty reads none.
	File string
	// Getenv looks up environment variables; nil reads none.
	Getenv func(string) string
	// Environ lists the environment as KEY=value strings (os.Environ); when
	// set, an AUDITPROC_… variable auditproc does not know is an error.
	Environ func() []string
	// Flags holds values from command-line flags by dotted key
	// ("consumer.workers"); only flags the user set belong here.
	Flags map[string]any
	// FlagNames names the flag that set each key of Flags ("workers" for
	// "consumer.workers"), for errors and Origins.
	FlagNames map[string]string
	// NoPipeline skips the rules about plugins, for commands that need no
	// pipeline (emit, status, dlq).
	NoPipeline bool
}

// Load builds the configuration: defaults, then the file, then AUDITPROC_…
// environment variables, then flags; then secrets; then Validate.
func Load(src Source) (Config, error) {
	cfg, _, err := LoadOrigins(src)
	return cfg, err
}

// LoadOrigins is Load that also says where each value came from. Every
// problem found is reported at once: the error joins one *FieldError per
// problem, each with its Origin. Origins is filled even when err is not nil.
func LoadOrigins(src Source) (Config, Origins, error) {
	cfg := Default()
	origins := Origins{}
	k := koanf.New(".")
	var errs []error
	parsed := true
	if src.File != "" {
		data, err := os.ReadFile(src.File)
		if err != nil {
			return cfg, origins, fmt.Errorf("%w:\n%w", ErrInvalid, &FieldError{Origin: src.File, Msg: fmt.Sprintf("cannot read: %v", err)})
		}
		if err := k.Load(rawBytes(data), yaml.Parser()); err != nil {
			// Nothing else can be checked in a file that does not parse,
			// but the environment still can.
			errs = append(errs, syntaxError(src.File, data, err))
			k = koanf.New(".")
			parsed = false
		} else {
			fileLines(src.File, data, origins)
		}
	}
	if src.Environ != nil {
		// A variable the file names as a value (a sink's headers_from_env)
		// is the user's own, read by auditproc: not unknown.
		referenced := map[string]bool{}
		collectStrings(k.Raw(), referenced)
		errs = append(errs, unknownVariables(src.Environ(), referenced)...)
	}
	if src.Getenv != nil {
		env := envValues(src.Getenv)
		for key := range env {
			origins[key] = Origin{Env: EnvName(key)}
		}
		if err := k.Load(confmap.Provider(env, "."), nil); err != nil {
			errs = append(errs, fmt.Errorf("config: environment: %w", err))
		}
	}
	if len(src.Flags) > 0 {
		for key := range src.Flags {
			name := src.FlagNames[key]
			if name == "" {
				name = key
			}
			origins[key] = Origin{Flag: name}
		}
		if err := k.Load(confmap.Provider(src.Flags, "."), nil); err != nil {
			errs = append(errs, fmt.Errorf("config: flags: %w", err))
		}
	}
	decodeErrs := decode(k, &cfg)
	errs = append(errs, decodeErrs...)
	if cfg.Metrics.Address == MetricsOff {
		cfg.Metrics.Address = ""
	}
	cfg.applyPluginDefaults()
	if src.File != "" {
		base := filepath.Dir(src.File)
		for i := range cfg.Plugins {
			if p := cfg.Plugins[i].Path; p != "" && !filepath.IsAbs(p) {
				cfg.Plugins[i].Path = filepath.Join(base, p)
			}
		}
		cfg.resolveSinkPaths(base)
	}
	if err := cfg.loadSecrets(src.Getenv); err != nil {
		errs = append(errs, err)
	}
	// A key whose value could not be decoded keeps its default; the rules
	// about it would only repeat the problem.
	undecoded := map[string]bool{}
	for _, e := range decodeErrs {
		var fe *FieldError
		if errors.As(e, &fe) {
			undecoded[fe.Key] = true
		}
	}
	for _, e := range cfg.problems(!src.NoPipeline) {
		// The rules about a file that does not parse would only list what
		// it lacks.
		if parsed && !undecoded[e.Key] {
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 {
		return cfg, origins, nil
	}
	for _, e := range errs {
		var fe *FieldError
		if errors.As(e, &fe) && fe.Origin == "" {
			org := origins.Of(fe.Key)
			if org == (Origin{}) && src.File != "" {
				// A default the file should have changed.
				org.File = src.File
			}
			fe.Origin = org.String()
		}
	}
	return cfg, origins, fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
}

// MetricsOff as metrics.address (in the file, the environment or a flag)
// turns the metrics listener off, as an empty address does.
const MetricsOff = "off"

// Problems returns the problems err joins (as Load returns them), one per
// error, in order; an error that joins nothing is returned alone.
func Problems(err error) []error {
	var out []error
	var walk func(e error)
	walk = func(e error) {
		if e == nil || e == ErrInvalid {
			return
		}
		if u, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range u.Unwrap() {
				walk(x)
			}
			return
		}
		out = append(out, e)
	}
	walk(err)
	return out
}

// toolVariables are AUDITPROC_… variables that are not configuration keys:
// secrets, the configuration file, and those of the build and test tooling.
var toolVariables = map[string]bool{
	"AUDITPROC_CONFIG":             true,
	EnvRedisPassword:               true,
	"AUDITPROC_HMAC_KEYS":          true,
	"AUDITPROC_HMAC_KEYS_FILE":     true,
	"AUDITPROC_HMAC_ACTIVE_KEY":    true,
	"AUDITPROC_NO_SKIP":            true,
	"AUDITPROC_IMAGE":              true,
	"AUDITPROC_REDIS_IMAGE":        true,
	"AUDITPROC_REDIS_BACKEND":      true,
	"AUDITPROC_STRICT_LIVENESS":    true,
	"AUDITPROC_SOAK":               true,
	"AUDITPROC_TEST_BIN":           true,
	"AUDITPROC_MAIN":               true,
	"AUDITPROC_FAULTS_REPORT":      true,
	"AUDITPROC_COMPOSE_REDIS_PORT": true,
	"AUDITPROC_PG_BIN":             true,
}

// collectStrings adds every string value below v to into.
func collectStrings(v any, into map[string]bool) {
	switch x := v.(type) {
	case string:
		into[x] = true
	case map[string]any:
		for _, e := range x {
			collectStrings(e, into)
		}
	case []any:
		for _, e := range x {
			collectStrings(e, into)
		}
	}
}

// KnownVariable reports whether auditproc or its tooling reads the
// AUDITPROC_… variable name.
func KnownVariable(name string) bool {
	if toolVariables[name] || strings.HasPrefix(name, "AUDITPROC_IT_") || strings.HasPrefix(name, "AUDITPROC_TEST_") {
		return true
	}
	for key := range envKeys() {
		if EnvName(key) == name {
			return true
		}
	}
	return false
}

// unknownVariables reports every AUDITPROC_… variable of environ that
// auditproc does not read: a misspelt one would otherwise be ignored.
func unknownVariables(environ []string, referenced map[string]bool) []error {
	var known []string
	for key := range envKeys() {
		known = append(known, EnvName(key))
	}
	for name := range toolVariables {
		known = append(known, name)
	}
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || KnownVariable(name) || referenced[name] {
			continue
		}
		msg := "unknown variable: auditproc reads no such setting"
		if near := nearest(name, known); near != "" {
			msg += "; did you mean " + near + "?"
		}
		errs = append(errs, &FieldError{Origin: name, Msg: msg})
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errs
}

// nearest is the name of names closest to s by edit distance, when close
// enough to be a likely misspelling.
func nearest(s string, names []string) string {
	best, bestD := "", 4
	for _, n := range names {
		if d := editDistance(s, n); d < bestD || d == bestD && n < best {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// rawBytes is a koanf provider over bytes already read.
type rawBytes []byte

func (b rawBytes) ReadBytes() ([]byte, error) { return b, nil }
func (b rawBytes) Read() (map[string]any, error) {
	return nil, errors.New("config: raw bytes need a parser")
}

func decode(k *koanf.Koanf, cfg *Config) []error {
	err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				durationHook,
				mapstructure.TextUnmarshallerHookFunc(),
			),
			TagName:          "koanf",
			WeaklyTypedInput: false,
		},
	})
	var errs []error
	if err != nil {
		errs = fieldErrors(err)
	}
	// The decoder's list of unused keys stops at the first value it cannot
	// decode, so the keys are checked against the struct here.
	unused := unknownKeys("", k.Raw(), reflect.TypeOf(Config{}))
	sort.Strings(unused)
	for _, key := range unused {
		if hint, ok := secretKeys[key]; ok {
			errs = append(errs, &FieldError{Key: key, Msg: "secrets are not read from the configuration file: " + hint})
			continue
		}
		if hint, ok := sinkSecretHint(key); ok {
			errs = append(errs, &FieldError{Key: key, Msg: "secrets are not read from the configuration file: " + hint})
			continue
		}
		errs = append(errs, &FieldError{Key: key, Msg: "unknown key"})
	}
	return errs
}

// durationHook decodes a duration from a string with a unit ("5s", "250ms",
// "2m"). A bare number is refused: mapstructure would read 5 as five
// nanoseconds, a read loop that spins.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	if from.Kind() != reflect.String {
		return nil, fmt.Errorf("%v has no unit: write it with one, such as 5s, 250ms or 2m", data)
	}
	s := strings.TrimSpace(data.(string))
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			return nil, fmt.Errorf("%q has no unit: write it with one, such as 5s, 250ms or 2m", s)
		}
		return nil, fmt.Errorf("%q is not a duration: write it with a unit, such as 5s, 250ms or 2m", s)
	}
	return d, nil
}

// envValues maps AUDITPROC_… variables onto configuration keys: every scalar
// key has one, named after its path ("consumer.batch_size" is
// AUDITPROC_CONSUMER_BATCH_SIZE). A value is read as a YAML scalar, so
// "8" is a number, "true" a boolean and "a,b" a list where the key is one.
func envValues(getenv func(string) string) map[string]any {
	out := map[string]any{}
	for key, typ := range envKeys() {
		name := EnvName(key)
		raw := getenv(name)
		if raw == "" {
			continue
		}
		if typ.Kind() == reflect.Slice {
			var list []any
			for _, item := range strings.Split(raw, ",") {
				if item = strings.TrimSpace(item); item != "" {
					list = append(list, item)
				}
			}
			out[key] = list
			continue
		}
		var v any
		if err := yamlv3.Unmarshal([]byte(raw), &v); err != nil || v == nil {
			v = raw
		}
		if _, isMap := v.(map[string]any); isMap {
			v = raw
		}
		out[key] = v
	}
	return out
}

// EnvName is the environment variable of a configuration key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// envKeys lists every key settable from the environment: the scalar and
// list-of-scalar fields of Config outside plugins and sinks.
func envKeys() map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" || tag == "plugins" || tag == "sinks" {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			if f.Type.Kind() == reflect.Struct && f.Type.String() != "time.Duration" {
				walk(key, f.Type)
				continue
			}
			keys[key] = f.Type
		}
	}
	walk("", reflect.TypeOf(Config{}))
	return keys
}

// EnvKeys returns the configuration keys settable from the environment,
// sorted, for documentation and help.
func EnvKeys() []string {
	var out []string
	for k := range envKeys() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (c *Config) loadSecrets(getenv func(string) string) error {
	if getenv != nil {
		if pw := getenv(EnvRedisPassword); pw != "" {
			c.RedisPassword = pw
			return nil
		}
	}
	if c.Redis.PasswordFile != "" {
		b, err := os.ReadFile(c.Redis.PasswordFile)
		if err != nil {
			// The path is not secret; the content is never shown.
			return &FieldError{Key: "redis.password_file", Msg: fmt.Sprintf("cannot read: %v", err)}
		}
		c.RedisPassword = strings.TrimRight(string(b), "\r\n")
	}
	return nil
}

// fieldErrors turns the decoder's errors into one *FieldError per key, so a
// wrong type reads like every other problem: "consumer.workers: …".
func fieldErrors(err error) []error {
	var out []error
	var walk func(e error)
	walk = func(e error) {
		var de *mapstructure.DecodeError
		switch x := e.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range x.Unwrap() {
				walk(inner)
			}
		case *mapstructure.DecodeError:
			if errors.As(e, &de) {
				msg := errors.Unwrap(de).Error()
				var ue *mapstructure.UnconvertibleTypeError
				if errors.As(de, &ue) {
					msg = fmt.Sprintf("%s is not %s", describeValue(ue.Value), typeName(ue.Expected.Type()))
				}
				out = append(out, &FieldError{Key: de.Name(), Msg: msg})
			}
		default:
			if inner := errors.Unwrap(e); inner != nil {
				walk(inner)
				return
			}
			out = append(out, e)
		}
	}
	walk(err)
	return out
}

// unknownKeys lists the keys of raw (a decoded YAML mapping) that name no
// field of t, by dotted path.
func unknownKeys(prefix string, raw map[string]any, t reflect.Type) []string {
	var out []string
	for key, v := range raw {
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		f, ok := fieldByTag(t, key)
		if !ok {
			out = append(out, path)
			continue
		}
		out = append(out, unknownIn(path, v, f.Type)...)
	}
	return out
}

func unknownIn(path string, v any, t reflect.Type) []string {
	switch {
	case t.Kind() == reflect.Struct && t != reflect.TypeOf(time.Duration(0)):
		if m, ok := v.(map[string]any); ok {
			return unknownKeys(path, m, t)
		}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		list, _ := v.([]any)
		var out []string
		for i, item := range list {
			out = append(out, unknownIn(fmt.Sprintf("%s[%d]", path, i), item, t.Elem())...)
		}
		return out
	case t.Kind() == reflect.Map && t.Elem().Kind() == reflect.Struct:
		m, _ := v.(map[string]any)
		var out []string
		for name, item := range m {
			out = append(out, unknownIn(path+"."+name, item, t.Elem())...)
		}
		return out
	}
	return nil
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.Tag.Get("koanf") == tag && tag != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func describeValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	default:
		return fmt.Sprint(x)
	}
}

// typeName says what a configuration field holds, in the user's words.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	default:
		return "a " + t.String()
	}
}
