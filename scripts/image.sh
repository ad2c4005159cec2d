#!/usr/bin/env bash
# Builds auditproc's container image without pulling anything: the static
# binary (CGO_ENABLED=0; wazero is pure Go) and the example plugins are built
# on this machine, staged under build/image/, and the Dockerfile assembles
# them FROM scratch. Also builds the local Redis image the tests and compose
# use (scripts/redis-image.sh) when it is missing.
#
#   scripts/image.sh            # build auditproc:local (and the Redis image)
#   scripts/image.sh --stage    # only stage build/image/, for a plain `docker build .`
#
# Environment:
#   AUDITPROC_IMAGE        image name (default auditproc:local)
#   AUDITPROC_REDIS_IMAGE  Redis image for compose and tests (default
#                          auditproc/redis:7-local, built here when missing;
#                          any other name is used as it is)
#   BASE                   base image (default scratch: nothing to pull)
# Docker's layer cache keeps a rebuild with unchanged inputs to a second or two.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="/usr/local/go/bin:$PATH"

image="${AUDITPROC_IMAGE:-auditproc:local}"
redis_image="${AUDITPROC_REDIS_IMAGE:-auditproc/redis:7-local}"
base="${BASE:-scratch}"
stage_only=
case "${1:-}" in
--stage) stage_only=1 ;;
"") ;;
*) echo "usage: $0 [--stage]" >&2; exit 2 ;;
esac

stage=build/image
rootfs=$stage/rootfs
rm -rf "$stage"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/lib/auditproc/plugins" "$rootfs/etc/auditproc" \
  "$rootfs/tmp" "$stage/cache"
chmod 1777 "$rootfs/tmp"

version="$(git describe --tags --always --dirty 2>/dev/null || echo devel)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"

# 1. The binary: static, no cgo, reproducible paths.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version -X main.revision=$revision" \
  -o "$rootfs/usr/local/bin/auditproc" ./cmd/auditproc

# 2. The example plugins (the test fixtures stay out of the image).
scripts/build-plugins.sh build/wasm >/dev/null 2>&1 || scripts/build-plugins.sh build/wasm
for dir in plugins/examples/*/; do
  name=$(basename "$dir")
  if [ -f "build/wasm/$name.wasm" ]; then
    cp "build/wasm/$name.wasm" "$rootfs/usr/lib/auditproc/plugins/"
  fi
done

# 3. The default pipeline, with its plugin paths pointing into the image and
#    Redis at the host name compose and most deployments give it.
sed -e 's#path: build/wasm/#path: /usr/lib/auditproc/plugins/#' \
    -e 's#url: redis://127.0.0.1:6379/0#url: redis://redis:6379/0#' \
    plugins.yaml >"$rootfs/etc/auditproc/plugins.yaml"
# Metrics reachable from outside the container, in the file (not ENV), so a
# mounted plugins.yaml keeps its own metrics.address.
if ! grep -q '^metrics:' "$rootfs/etc/auditproc/plugins.yaml"; then
  printf '\n# In the image: reachable from outside the container, for Prometheus.\nmetrics:\n  address: 0.0.0.0:9464\n' >>"$rootfs/etc/auditproc/plugins.yaml"
fi
if grep -q 'path: build/wasm/' "$rootfs/etc/auditproc/plugins.yaml"; then
  echo "image: plugins.yaml still names build/wasm/ after rewriting" >&2
  exit 1
fi
for p in $(sed -n 's#^ *path: /usr/lib/auditproc/plugins/\([^ ]*\).*#\1#p' "$rootfs/etc/auditproc/plugins.yaml"); do
  if [ ! -f "$rootfs/usr/lib/auditproc/plugins/$p" ]; then
    echo "image: plugins.yaml names $p, which was not built" >&2
    exit 1
  fi
done

# 4. The non-root user (uid and gid 65532, as distroless's "nonroot").
printf 'root:x:0:0:root:/root:/sbin/nologin\nauditproc:x:65532:65532:auditproc:/var/cache/auditproc:/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nauditproc:x:65532:\n' >"$rootfs/etc/group"

if [ -n "$stage_only" ]; then
  echo "image: staged $stage; now: docker build -t $image ." >&2
  exit 0
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "image: docker is not installed" >&2
  exit 1
fi

# The legacy builder: FROM scratch needs no BuildKit, and the buildx plugin is
# often missing. Its output is shown only when the build fails.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! DOCKER_BUILDKIT=0 docker build --pull=false \
  --build-arg "BASE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$image" . >"$log" 2>&1; then
  cat "$log" >&2
  echo "image: docker build of $image failed" >&2
  exit 1
fi
docker image inspect "$image" --format "image: {{index .RepoTags 0}} {{.Size}} bytes ($version)" >&2

# The development keyring compose.yaml mounts: generated here, once, into the
# git-ignored build/compose/ (a key is never committed), readable by the
# image's user (uid 65532) only.
keys=build/compose/hmac.keys
if [ ! -s "$keys" ]; then
  mkdir -p build/compose
  "$rootfs/usr/local/bin/auditproc" keygen --id compose-dev --out "$keys"
  echo "image: generated the development keyring $keys for compose.yaml" >&2
fi
if [ "$(id -u)" = 0 ]; then
  chown 65532:65532 "$keys"
else
  # Without root the file cannot be given to uid 65532: a development key only.
  chmod 0644 "$keys"
fi

# The Redis image compose and the fault suite use.
if [ "$redis_image" = "auditproc/redis:7-local" ]; then
  IMAGE="$redis_image" scripts/redis-image.sh
elif ! docker image inspect "$redis_image" >/dev/null 2>&1; then
  echo "image: note: $redis_image (AUDITPROC_REDIS_IMAGE) is not present locally; compose will try to pull it" >&2
fi
