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
# shellcheck source=image-lib.sh
. "$root/scripts/image-lib.sh"
image="${IMAGE:-auditproc/rsyslog:local}"
force=
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
need_build rsyslog-image "$image" "$force" || exit 0
[ -x /usr/sbin/rsyslogd ] || "$root/scripts/deps.sh"
modules="$(dirname "$(ls /usr/lib/*/rsyslog/imtcp.so | head -1)")"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
rootfs="$stage/rootfs"
mkdir -p "$rootfs/usr/sbin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/spool/rsyslog" "$rootfs/var/log/auditproc" "$rootfs$modules"
chmod 1777 "$rootfs/tmp"
cp -L /usr/sbin/rsyslogd "$rootfs/usr/sbin/rsyslogd"
cp -L "$modules"/*.so "$rootfs$modules/"
stage_libs "$rootfs" /usr/sbin/rsyslogd "$modules"/*.so
echo 'root:x:0:0:root:/root:/sbin/nologin' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
cp "$root/docker/rsyslog/Dockerfile" "$stage/Dockerfile"

version="$(/usr/sbin/rsyslogd -v | awk 'NR==1{print $2}')"
echo "rsyslog-image: building $image from /usr/sbin/rsyslogd (rsyslog $version), nothing pulled" >&2
build_image rsyslog-image "$image" "$stage" "auditproc local rsyslog" "$version"
