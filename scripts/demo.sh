#!/usr/bin/env bash
# make demo — auditproc's main job, end to end, on a real Redis:
#   1. builds auditproc and the example plugins;
#   2. starts a throwaway redis-server (or uses AUDITPROC_REDIS_URL);
#   3. generates a signing key, appends a realistic batch of signed audit
#      events (examples/demo/events.jsonl), then a few forged entries
#      written raw, as an attacker with Redis access would;
#   4. runs the plugins.yaml pipeline until the stream is drained;
#   5. prints what happened, and leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

scripts/deps.sh
say "building auditproc and the plugins"
make -s build >/dev/null
scripts/build-plugins.sh build/wasm
ap=bin/auditproc

work=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${AUDITPROC_REDIS_URL:-}" ]; then
  url=$AUDITPROC_REDIS_URL
  cli=(redis-cli -u "$url")
  # Keep a shared Redis clean: the demo's streams get their own names.
  prefix="auditproc-demo:$$:"
  say "using Redis at $url (streams prefixed $prefix)"
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 6390)
  redis-server --bind 127.0.0.1 --port "$port" --dir "$work" --save "" --appendonly yes \
    --maxmemory-policy noeviction --logfile "$work/redis.log" &
  redis_pid=$!
  url="redis://127.0.0.1:$port/0"
  cli=(redis-cli -p "$port")
  for _ in $(seq 50); do "${cli[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done
  prefix=""
  say "started a throwaway Redis on 127.0.0.1:$port (AOF on, noeviction)"
fi

export AUDITPROC_REDIS_URL=$url
export AUDITPROC_STREAM_NAME="${prefix}audit:stream"
export AUDITPROC_DEAD_LETTER_STREAM="${prefix}audit:dead"
# Quick redelivery, so forged entries reach the dead-letter stream within
# seconds rather than after the production min_idle of a minute.
export AUDITPROC_RECLAIM_MIN_IDLE=2s AUDITPROC_RECLAIM_INTERVAL=250ms AUDITPROC_RECLAIM_MAX_DELIVERIES=3
# Metrics on a port of its own (127.0.0.1:0): two demos at once do not collide.
export AUDITPROC_CONSUMER_BLOCK=500ms AUDITPROC_METRICS_ADDRESS=127.0.0.1:0
# Compiled plugins are cached between demos (the first one compiles them).
export AUDITPROC_HOST_CACHE_DIR="$PWD/build/cache"
config=$work/plugins.yaml
sed -e "s#stream: audit:alerts#stream: ${prefix}audit:alerts#" -e "s#stream: audit:archive#stream: ${prefix}audit:archive#" \
    -e "s#path: build/wasm/#path: $PWD/build/wasm/#" plugins.yaml > "$config"
stream=$AUDITPROC_STREAM_NAME

say "generating a signing key (kept in a temporary file, mode 0600)"
$ap keygen --id demo-key --out "$work/keys" >/dev/null
export AUDITPROC_HMAC_KEYS_FILE=$work/keys

say "appending $(wc -l < examples/demo/events.jsonl) signed audit events"
$ap emit --config "$config" --file examples/demo/events.jsonl

say "writing 3 forged entries straight into Redis"
"${cli[@]}" XADD "$stream" '*' event '{"actor":"mallory","action":"audit.delete","outcome":"success"}' >/dev/null
"${cli[@]}" XADD "$stream" '*' v 1 kid demo-key \
  event '{"event_id":"forged-1","timestamp":"2026-11-27T09:30:00Z","actor":"mallory","action":"role.grant","outcome":"success"}' \
  sig "$(printf '0%.0s' $(seq 64))" >/dev/null
"${cli[@]}" XADD "$stream" '*' v 1 kid stolen-key \
  event '{"event_id":"forged-2","timestamp":"2026-11-27T09:31:00Z","actor":"mallory","action":"export.create","outcome":"success"}' \
  sig "$(printf 'a%.0s' $(seq 64))" >/dev/null
echo "  unsigned; signed with a made-up signature; signed with an unknown key"

say "running the pipeline until the stream is drained"
$ap run --config "$config" --stop-when-idle --summary --log-format json 2> "$work/run.log" | tee "$work/summary.txt"

forged=$(grep '"msg":"security_audit_tampered_message"' "$work/run.log" | grep -o '"entry_id":"[^"]*"' | sort -u | wc -l)
say "security log: $forged forged entries refused, never shown to a plugin"
grep '"msg":"security_audit_tampered_message"' "$work/run.log" | grep -o '"entry_id":"[^"]*","stream":"[^"]*","reason":"[^"]*"' | sort -u | sed 's/^/  /'

say "alerts emitted by the detect plugin (${prefix}audit:alerts)"
# The replica's checkpoints there (its chain) are not alerts.
alerts=$("${cli[@]}" XRANGE "${prefix}audit:alerts" - + | grep '^{' | grep -v '"checkpoint":{' || true)
echo "${alerts:-(none)}" | sed 's/^/  /'

say "a redacted event from the processed trail (${prefix}audit:archive)"
archive=$("${cli[@]}" XRANGE "${prefix}audit:archive" - + | grep '^{' || true)
redacted=$(grep 'REDACTED' <<<"$archive" | head -n 1 || true)
echo "  ${redacted:-(none)}"

say "dead-letter stream"
$ap dlq list --config "$config"

say "consumer group status"
$ap status --config "$config"

say "auditproc verify --all: the whole trail, input and processed, checked from Redis and the key"
# The forged entries are its findings (exit 1); the dead letters, alerts and
# archive the replica chained verify whole.
$ap verify --config "$config" --all || true

if [ -n "$prefix" ]; then
  "${cli[@]}" DEL "$stream" "${prefix}audit:dead" "${prefix}audit:alerts" "${prefix}audit:archive" >/dev/null
fi
say "done: Redis stopped, temporary files removed"
