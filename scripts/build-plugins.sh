#!/usr/bin/env bash
# Builds every Wasm module of the repository into the directory given ($1,
# default build/wasm), each as <name>.wasm:
#   plugins/examples/<name>/ and plugins/fixtures/<name>/ holding
#     main.go  -> standard Go, GOOS=wasip1 GOARCH=wasm -buildmode=c-shared
#     *.c      -> clang --target=wasm32-wasi -mexec-model=reactor (with abi/c)
#   plugins/fixtures/<name>.wat -> wat2wasm (its default features: the standardised ones)
#   plugins/fixtures/hostile/<name>.wat -> <out>/hostile/<name>.wasm, with the
#     wat2wasm flags of its ";; build:" line (--no-check for invalid modules)
#   plugins/fixtures/hostile/<name>.hex -> <out>/hostile/<name>.wasm, the bytes
#     written in hex (";;" starts a comment), for what text format cannot say
# A module is rebuilt only when a source it depends on is newer than it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/wasm}
mkdir -p "$out"
export PATH="/usr/local/go/bin:$PATH"

# newer OUT SRC... : true when OUT is missing or older than any SRC file.
newer() {
  local target=$1; shift
  [ -e "$target" ] || return 0
  [ -n "$(find "$@" -type f -newer "$target" -print -quit 2>/dev/null)" ]
}

built=0
for dir in plugins/examples/*/ plugins/fixtures/*/; do
  [ -d "$dir" ] || continue
  name=$(basename "$dir")
  target="$out/$name.wasm"
  if [ -f "$dir/main.go" ]; then
    if newer "$target" "$dir" abi go.mod; then
      GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o "$target" "./$dir"
      built=$((built + 1))
    fi
  elif compgen -G "$dir*.c" >/dev/null; then
    if newer "$target" "$dir" abi/c; then
      clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
        -I abi/c -o "$target" "$dir"*.c $(ls abi/c/*.c 2>/dev/null || true) \
        $(cat "$dir/ldflags" 2>/dev/null || true)
      built=$((built + 1))
    fi
  fi
done
for wat in plugins/fixtures/*.wat; do
  [ -f "$wat" ] || continue
  target="$out/$(basename "$wat" .wat).wasm"
  if newer "$target" "$wat"; then
    wat2wasm -o "$target" "$wat"
    built=$((built + 1))
  fi
done
mkdir -p "$out/hostile"
for src in plugins/fixtures/hostile/*.wat plugins/fixtures/hostile/*.hex; do
  [ -f "$src" ] || continue
  name=$(basename "$src")
  target="$out/hostile/${name%.*}.wasm"
  newer "$target" "$src" || continue
  case "$src" in
  *.wat)
    # shellcheck disable=SC2046 # the build line holds several flags
    wat2wasm $(sed -n 's/^;; build: *//p' "$src" | head -n 1) -o "$target" "$src" ;;
  *.hex)
    perl -ne 's/;;.*//; s/\s+//g; print pack("H*", $_)' "$src" >"$target.tmp"
    mv "$target.tmp" "$target" ;;
  esac
  built=$((built + 1))
done
echo "plugins: $built module(s) built into $out" >&2
