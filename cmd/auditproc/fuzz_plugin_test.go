package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditproc/auditproc/internal/wasmtest"
)

// FuzzPluginCheck feeds mutated real modules (every module the build makes
// under 64 KiB, the hostile corpus included) to plugin check, as an
// operator vetting a module would: it must never crash nor hang, only
// answer loadable (0) or refused (2).
func FuzzPluginCheck(f *testing.F) {
	dir := wasmtest.Dir(f)
	for _, pattern := range []string{"*.wasm", "hostile/*.wasm"} {
		files, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil && len(b) < 64<<10 {
				f.Add(b)
			}
		}
	}
	tmp := f.TempDir()
	f.Fuzz(func(t *testing.T, wasm []byte) {
		file := filepath.Join(tmp, "fuzz.wasm")
		if err := os.WriteFile(file, wasm, 0o600); err != nil {
			t.Fatal(err)
		}
		// The module's own code is bounded by its init deadline; the
		// context bounds the rest.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out, errOut bytes.Buffer
		start := time.Now()
		err := run(ctx, []string{"plugin", "check", "--deadline", "50ms", file}, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("plugin check took %s", took)
		}
		if code := exitCode(err); code != exitOK && code != exitUsage {
			t.Fatalf("plugin check exited %d: %v\n%s", code, err, errOut.String())
		}
	})
}
