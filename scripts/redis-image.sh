#!/usr/bin/env bash
# Builds the local Redis image auditproc/redis:7-local (or $AUDITPROC_REDIS_IMAGE
# when it names an auditproc/ image) from this machine's own redis-server,
# without pulling anything: a FROM scratch image holding /usr/bin/redis-server,
# the libraries ldd lists, the dynamic loader and a minimal /bin/sh for the
# entry point (docker/redis/). Does nothing when the image is already present;
# --force rebuilds it. Needs redis-server (scripts/deps.sh) and Docker.
#
#   scripts/redis-image.sh            # build when missing
#   scripts/redis-image.sh --force    # rebuild
#   IMAGE=name:tag scripts/redis-image.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
image="${IMAGE:-auditproc/redis:7-local}"
force=
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

if ! command -v docker >/dev/null 2>&1; then
  echo "redis-image: docker is not installed; the process backend (redis-server) still works" >&2
  exit 1
fi
if [ -z "$force" ] && docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
  "$root/scripts/deps.sh"
fi
server="$(readlink -f "$(command -v redis-server)")"
shell="$(readlink -f /bin/sh)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
rootfs="$stage/rootfs"
mkdir -p "$rootfs/usr/bin" "$rootfs/usr/local/bin" "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/data"
chmod 1777 "$rootfs/tmp"

# redis-server is a symlink to redis-check-rdb on Debian: the binary picks its
# mode from argv[0], so it must be installed under the name redis-server.
cp -L "$server" "$rootfs/usr/bin/redis-server"
cp -L "$shell" "$rootfs/bin/sh"
cp "$root/docker/redis/docker-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
chmod 0755 "$rootfs/usr/local/bin/docker-entrypoint.sh"
cp "$root/docker/redis/Dockerfile" "$stage/Dockerfile"

# Every shared object either binary needs, at the path the loader looks for it
# (the loader itself included), followed through symlinks.
for bin in "$server" "$shell"; do
  ldd "$bin" | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

# The user Redis runs as (root, like the official image before it drops privileges).
echo 'root:x:0:0:root:/data:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

version="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
echo "redis-image: building $image from $(command -v redis-server) (Redis $version), nothing pulled" >&2
# The legacy builder: FROM scratch needs no BuildKit, and the buildx plugin is
# often missing. Its output is shown only when the build fails.
if ! DOCKER_BUILDKIT=0 docker build --pull=false \
  --label "org.opencontainers.image.title=auditproc local redis" \
  --label "org.opencontainers.image.version=$version" \
  -t "$image" "$stage" >"$stage/build.log" 2>&1; then
  cat "$stage/build.log" >&2
  echo "redis-image: docker build of $image failed" >&2
  exit 1
fi
docker image inspect "$image" --format 'redis-image: {{index .RepoTags 0}} {{.Size}} bytes' >&2
