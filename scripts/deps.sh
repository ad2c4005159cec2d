#!/usr/bin/env bash
# Installs what auditproc's build and tests need on a fresh Debian machine and
# nothing else: redis-server (process backend and the local Redis image), the
# clang/wasi-libc toolchain for C plugins, and PostgreSQL and rsyslog for the
# sink tests. Idempotent: already-present tools are left alone, so a
# developer's machine is not touched twice.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli    >/dev/null 2>&1 || need+=(redis-tools)
command -v clang        >/dev/null 2>&1 || need+=(clang)
command -v wasm-ld      >/dev/null 2>&1 || need+=(lld)
[ -d /usr/include/wasm32-wasi ] || [ -d /usr/lib/wasm32-wasi ] || need+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)
command -v wat2wasm     >/dev/null 2>&1 || need+=(wabt)
# The sink tests start a real PostgreSQL (internal/pgtest) and rsyslog with
# its TLS driver (internal/syslogtest).
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/sbin/rsyslogd ] || command -v rsyslogd >/dev/null 2>&1 || need+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need+=(rsyslog-gnutls)
# promtool checks and unit-tests deploy/prometheus/alerts.yaml (TestAlertRules).
command -v promtool     >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
