// Package wasmtest gives tests the Wasm modules of this repository, built by
// scripts/build-plugins.sh (the same build `make plugins` runs), so a test
// always runs the module compiled from the source next to it.
package wasmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var build struct {
	once sync.Once
	dir  string
	err  error
}

// Root returns the repository root: the nearest directory above the working
// directory that holds go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// FindRoot is Root for code without a test handle, such as a TestMain.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("wasmtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Dir builds every module once per test binary (only those whose sources
// changed) and returns the directory holding <name>.wasm files.
func Dir(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		root, err := FindRoot()
		if err != nil {
			build.err = err
			return
		}
		build.dir = filepath.Join(root, "build", "wasm")
		cmd := exec.Command(filepath.Join(root, "scripts", "build-plugins.sh"), build.dir)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("wasmtest: build plugins: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.dir
}

// Path returns the path of the built module name (without ".wasm").
func Path(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Dir(t), name+".wasm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("wasmtest: module %q was not built: %v", name, err)
	}
	return p
}

// Bytes returns the contents of the built module name.
func Bytes(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
