#!/usr/bin/env bash
# Builds every Wasm module of the repository into the directory given ($1).
set -euo pipefail
out=${1:-build/wasm}
mkdir -p "$out"
