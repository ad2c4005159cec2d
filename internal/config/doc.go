// Package config loads and validates auditproc's configuration: defaults,
// then the YAML file (plugins.yaml), then AUDITPROC_… environment variables,
// then command-line flags, into typed structs. Unknown keys and wrong types
// are errors that name the key; secrets (HMAC keys, the Redis password) are
// read from the environment or files only, never from the YAML.
package config
