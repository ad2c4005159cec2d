package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/auditproc/auditproc/internal/integrity"
)

func keygenCommand() *command {
	var id, out string
	return &command{
		name:    "keygen",
		summary: "generate an HMAC signing key in the keyring format",
		usage:   "[--id KEY_ID] [--out FILE]",
		examples: `  # a new keyring file, readable by its owner only
  auditproc keygen --id 2026-11 --out /etc/auditproc/keys
  export AUDITPROC_HMAC_KEYS_FILE=/etc/auditproc/keys

  # rotation: append a second key to the file, then make it active
  auditproc keygen --id 2027-01 --out /etc/auditproc/keys
  export AUDITPROC_HMAC_ACTIVE_KEY=2027-01`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&id, "id", time.Now().UTC().Format("2006-01-02"), "key id (letters, digits, '.', '_', '-'; at most 64)")
			fs.StringVar(&out, "out", "", "append the key to this keyring file (created with mode 0600) instead of printing it")
		},
		run: func(_ context.Context, io stdio, _ *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("keygen takes no arguments, got %q", args)
			}
			key, err := integrity.GenerateKey()
			if err != nil {
				return err
			}
			line := integrity.FormatKeyLine(id, key)
			// Refuse an id the keyring format would refuse, before writing.
			if _, err := integrity.NewKeyring(id, map[string][]byte{id: key}); err != nil {
				return usagef("keygen: --id %q: %v", id, err)
			}
			if out == "" {
				fmt.Fprintln(io.out, line)
				return nil
			}
			return appendKeyLine(out, id, line)
		},
	}
}

// appendKeyLine adds a key to a keyring file, refusing a duplicate id and a
// file that is readable by others.
func appendKeyLine(path, id, line string) error {
	existing, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("keygen: %w", err)
	default:
		if _, err := integrity.ParseKeyring(existing); err != nil && len(existing) > 0 {
			return usagef("keygen: %s is not a valid keyring, not touching it: %v", path, err)
		}
		kr, _ := integrity.ParseKeyring(existing)
		if kr != nil {
			for _, have := range kr.KeyIDs() {
				if have == id {
					return usagef("keygen: %s already has a key %q: choose another --id", path, id)
				}
			}
		}
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			return usagef("keygen: %s is readable by group or others (mode %v): chmod 600 it first", path, st.Mode().Perm())
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if len(existing) > 0 && existing[len(existing)-1] != '\n' {
		line = "\n" + line
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return fmt.Errorf("keygen: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("keygen: sync %s: %w", path, err)
	}
	return f.Close()
}
