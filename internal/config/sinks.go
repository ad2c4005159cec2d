package config

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/auditproc/auditproc/internal/sink"
)

// sinkKeys lists the keys each sink type reads (type is always allowed).
var sinkKeys = map[string][]string{
	SinkStream:   {"stream"},
	SinkFile:     {"path"},
	SinkStdout:   {},
	SinkPostgres: {"url", "table", "password_env", "password_file", "timeout"},
	SinkSyslog: {"address", "tls", "ca_file", "cert_file", "key_file", "server_name", "facility", "severity",
		"hostname", "app_name", "msg_id", "sd_id", "timeout"},
	SinkHTTP: {"url", "preset", "format", "index", "labels", "headers_from_env", "idempotency_header",
		"max_attempts", "backoff", "timeout", "ca_file", "cert_file", "key_file", "server_name"},
}

// misplacedKeys are the keys set on s that its type does not read.
func (s Sink) misplacedKeys() []string {
	allowed, ok := sinkKeys[s.Type]
	if !ok {
		return nil
	}
	var out []string
	v := reflect.ValueOf(s)
	for i := 0; i < v.NumField(); i++ {
		tag := v.Type().Field(i).Tag.Get("koanf")
		if tag == "type" || v.Field(i).IsZero() {
			continue
		}
		found := false
		for _, a := range allowed {
			found = found || a == tag
		}
		if !found {
			out = append(out, tag)
		}
	}
	return out
}

func (s Sink) validateExternal() error {
	switch s.Type {
	case SinkPostgres:
		if s.PasswordEnv != "" && s.PasswordFile != "" {
			return errors.New("password_env and password_file exclude each other")
		}
		return s.postgres("").Validate()
	case SinkSyslog:
		return s.syslog().Validate()
	case SinkHTTP:
		return s.http().Validate()
	}
	return nil
}

func (s Sink) postgres(password string) sink.PostgresConfig {
	return sink.PostgresConfig{URL: s.URL, Password: password, Table: s.Table, Timeout: s.Timeout}
}

func (s Sink) syslog() sink.SyslogConfig {
	return sink.SyslogConfig{Address: s.Address, TLS: s.TLS, CAFile: s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile,
		ServerName: s.ServerName, Facility: s.Facility, Severity: s.Severity, Hostname: s.Hostname, AppName: s.AppName,
		MsgID: s.MsgID, SDID: s.SDID, Timeout: s.Timeout}
}

func (s Sink) http() sink.HTTPConfig {
	return sink.HTTPConfig{URL: s.URL, Preset: s.Preset, Format: s.Format, HeadersFromEnv: s.HeadersFromEnv, Index: s.Index,
		Labels: s.Labels, IdempotencyHeader: s.IdempotencyHeader, CAFile: s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile,
		Timeout: s.Timeout, MaxAttempts: s.MaxAttempts, Backoff: s.Backoff}
}

// OpenExternal opens the external sink s (postgres, syslog or http) named
// name: it reads its secrets from the environment or files and checks its
// TLS files, but connects only on the first write.
func (s Sink) OpenExternal(name string, logger *slog.Logger) (sink.Sink, error) {
	switch s.Type {
	case SinkPostgres:
		pw, err := sink.ReadSecret(s.PasswordEnv, s.PasswordFile)
		if err != nil {
			return nil, &FieldError{Key: "sinks." + name + ".password", Msg: err.Error()}
		}
		return sink.NewPostgres(name, s.postgres(pw), logger)
	case SinkSyslog:
		return sink.NewSyslog(name, s.syslog(), logger)
	case SinkHTTP:
		return sink.NewHTTP(name, s.http(), logger)
	}
	return nil, fmt.Errorf("sink %q: type %q is not an external sink", name, s.Type)
}

// resolveSinkPaths makes the sinks' file paths relative to the
// configuration file's directory base.
func (c *Config) resolveSinkPaths(base string) {
	for name, s := range c.Sinks {
		for _, p := range []*string{&s.CAFile, &s.CertFile, &s.KeyFile, &s.PasswordFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(base, *p)
			}
		}
		c.Sinks[name] = s
	}
}

// sinkSecretHint says where a secret written under a sink goes instead.
func sinkSecretHint(key string) (string, bool) {
	if !strings.HasPrefix(key, "sinks.") && !strings.HasPrefix(key, "sinks[") {
		return "", false
	}
	switch key[strings.LastIndexByte(key, '.')+1:] {
	case "password":
		return "use password_env (the name of an environment variable) or password_file", true
	case "headers", "token", "api_key":
		return "use headers_from_env (header name: environment variable)", true
	}
	return "", false
}
