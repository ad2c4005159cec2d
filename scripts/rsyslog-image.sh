#!/usr/bin/env bash
# Builds the local rsyslog image auditproc/rsyslog:local (or $IMAGE) from this
# machine's own Debian rsyslog package, without pulling anything: a FROM
# scratch image holding rsyslogd, its modules (TLS included) and the
# libraries ldd lists (docker/rsyslog/). The example pipeline (examples/sinks)
# uses it as the syslog collector. Does nothing when the image is already
# present; --force rebuilds it. Needs rsyslog and rsyslog-gnutls
# (scripts/deps.sh) and Docker.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
image="${IMAGE:-auditproc/rsyslog:local}"
force=
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
if ! command -v docker >/dev/null 2>&1; then
  echo "rsyslog-image: docker is not installed" >&2
  exit 1
fi
if [ -z "$force" ] && docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
[ -x /usr/sbin/rsyslogd ] || "$root/scripts/deps.sh"
modules="$(dirname "$(ls /usr/lib/*/rsyslog/imtcp.so | head -1)")"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
rootfs="$stage/rootfs"
mkdir -p "$rootfs/usr/sbin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/spool/rsyslog" "$rootfs/var/log/auditproc" "$rootfs$modules"
chmod 1777 "$rootfs/tmp"
cp -L /usr/sbin/rsyslogd "$rootfs/usr/sbin/rsyslogd"
cp -L "$modules"/*.so "$rootfs$modules/"
{
  for bin in /usr/sbin/rsyslogd "$modules"/*.so; do
    ldd "$bin" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}'
  done
} | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
echo 'root:x:0:0:root:/root:/sbin/nologin' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
cp "$root/docker/rsyslog/Dockerfile" "$stage/Dockerfile"

version="$(/usr/sbin/rsyslogd -v | awk 'NR==1{print $2}')"
echo "rsyslog-image: building $image from /usr/sbin/rsyslogd (rsyslog $version), nothing pulled" >&2
if ! DOCKER_BUILDKIT=0 docker build --pull=false \
  --label "org.opencontainers.image.title=auditproc local rsyslog" \
  --label "org.opencontainers.image.version=$version" \
  -t "$image" "$stage" >"$stage/build.log" 2>&1; then
  cat "$stage/build.log" >&2
  echo "rsyslog-image: docker build of $image failed" >&2
  exit 1
fi
docker image inspect "$image" --format 'rsyslog-image: {{index .RepoTags 0}} {{.Size}} bytes' >&2
