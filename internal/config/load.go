package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

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
	// Flags holds values from command-line flags by dotted key
	// ("consumer.workers"); only flags the user set belong here.
	Flags map[string]any
	// NoPipeline skips the rules about plugins, for commands that need no
	// pipeline (emit, status, dlq).
	NoPipeline bool
}

// Load builds the configuration: defaults, then the file, then AUDITPROC_…
// environment variables, then flags; then secrets; then Validate.
func Load(src Source) (Config, error) {
	cfg := Default()
	k := koanf.New(".")
	where := "configuration"
	if src.File != "" {
		where = src.File
		data, err := os.ReadFile(src.File)
		if err != nil {
			return cfg, fmt.Errorf("config: read %w", err)
		}
		if err := k.Load(rawBytes(data), yaml.Parser()); err != nil {
			return cfg, fmt.Errorf("config: %s: not valid YAML: %w", src.File, err)
		}
	}
	if src.Getenv != nil {
		env, err := envValues(src.Getenv)
		if err != nil {
			return cfg, err
		}
		if err := k.Load(confmap.Provider(env, "."), nil); err != nil {
			return cfg, fmt.Errorf("config: environment: %w", err)
		}
	}
	if len(src.Flags) > 0 {
		if err := k.Load(confmap.Provider(src.Flags, "."), nil); err != nil {
			return cfg, fmt.Errorf("config: flags: %w", err)
		}
	}
	if err := decode(k, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w:\n%w", where, ErrInvalid, err)
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
		return cfg, err
	}
	if err := cfg.validate(!src.NoPipeline); err != nil {
		return cfg, fmt.Errorf("%s: %w", where, err)
	}
	return cfg, nil
}

// rawBytes is a koanf provider over bytes already read.
type rawBytes []byte

func (b rawBytes) ReadBytes() ([]byte, error) { return b, nil }
func (b rawBytes) Read() (map[string]any, error) {
	return nil, errors.New("config: raw bytes need a parser")
}

func decode(k *koanf.Koanf, cfg *Config) error {
	var md mapstructure.Metadata
	err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				mapstructure.StringToTimeDurationHookFunc(),
				mapstructure.TextUnmarshallerHookFunc(),
			),
			Metadata:         &md,
			TagName:          "koanf",
			WeaklyTypedInput: false,
		},
	})
	if err != nil {
		return fieldErrors(err)
	}
	if len(md.Unused) == 0 {
		return nil
	}
	sort.Strings(md.Unused)
	var errs []error
	for _, key := range md.Unused {
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
	return errors.Join(errs...)
}

// envValues maps AUDITPROC_… variables onto configuration keys: every scalar
// key has one, named after its path ("consumer.batch_size" is
// AUDITPROC_CONSUMER_BATCH_SIZE). A value is read as a YAML scalar, so
// "8" is a number, "true" a boolean and "a,b" a list where the key is one.
func envValues(getenv func(string) string) (map[string]any, error) {
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
	return out, nil
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
func fieldErrors(err error) error {
	inner := errors.Unwrap(err)
	if inner == nil {
		return err
	}
	joined, ok := inner.(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var out []error
	for _, e := range joined.Unwrap() {
		var de *mapstructure.DecodeError
		if errors.As(e, &de) {
			out = append(out, &FieldError{Key: de.Name(), Msg: "wrong type or value: " + errors.Unwrap(de).Error()})
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
