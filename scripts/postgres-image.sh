#!/usr/bin/env bash
# Builds the local PostgreSQL image auditproc/postgres:15-local (or $IMAGE)
# from this machine's own Debian postgresql package, without pulling anything:
# a FROM scratch image holding the server, initdb and psql, the libraries ldd
# lists, the share directory, the time zones and a minimal /bin/sh for the
# entry point (docker/postgres/). The example pipeline (examples/sinks) and the
# fault suite's PostgreSQL scenario use it. Does nothing when the image is
# already present; --force rebuilds it. Needs postgresql (scripts/deps.sh) and
# Docker.
#
#   scripts/postgres-image.sh            # build when missing
#   scripts/postgres-image.sh --force    # rebuild
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=image-lib.sh
. "$root/scripts/image-lib.sh"
image="${IMAGE:-auditproc/postgres:15-local}"
force=
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

need_build postgres-image "$image" "$force" || exit 0
pgbin=/usr/lib/postgresql/15/bin
if [ ! -x "$pgbin/postgres" ]; then
  "$root/scripts/deps.sh"
fi
[ -x "$pgbin/postgres" ] || { echo "postgres-image: PostgreSQL 15 is not installed at $pgbin" >&2; exit 1; }
shell="$(readlink -f /bin/sh)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
rootfs="$stage/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/usr/local/bin" "$rootfs/usr/share" \
  "$stage/pghome/data"
chmod 1777 "$rootfs/tmp"

for d in /usr/lib/postgresql/15 /usr/share/postgresql/15 /usr/share/zoneinfo; do
  mkdir -p "$rootfs$d"
  cp -rL "$d/." "$rootfs$d/"
done
cp -L "$shell" "$rootfs/bin/sh"
cp "$root/docker/postgres/docker-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
chmod 0755 "$rootfs/usr/local/bin/docker-entrypoint.sh"
cp "$root/docker/postgres/Dockerfile" "$stage/Dockerfile"

# Every shared object the programs and the server's modules need.
stage_libs "$rootfs" "$pgbin"/postgres "$pgbin"/initdb "$pgbin"/psql "$pgbin"/pg_ctl "$shell" /usr/lib/postgresql/15/lib/*.so

# The server's user (uid 999 like the official image) owns the data directory.
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh' >>"$rootfs/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' >"$rootfs/etc/group"
chmod 0700 "$stage/pghome/data"

version="$("$pgbin/postgres" --version | awk '{print $3}')"
echo "postgres-image: building $image from $pgbin (PostgreSQL $version), nothing pulled" >&2
build_image postgres-image "$image" "$stage" "auditproc local postgresql" "$version"
