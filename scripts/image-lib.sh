# Shared by the scripts that build local images FROM scratch out of this
# machine's own Debian packages (postgres-image.sh, rsyslog-image.sh).
# Source it; it defines functions only.

# stage_libs ROOTFS FILE...: copies every shared object the FILEs need (as
# ldd lists them, the loader included) to the same path under ROOTFS.
stage_libs() {
  local rootfs="$1"
  shift
  local f
  for f in "$@"; do
    ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}'
  done | sort -u | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# build_image NAME IMAGE STAGE TITLE VERSION: docker build of STAGE (its
# Dockerfile and rootfs/) with the legacy builder (FROM scratch needs no
# BuildKit), nothing pulled; the build's output is shown only on failure.
build_image() {
  local name="$1" image="$2" stage="$3" title="$4" version="$5"
  if ! DOCKER_BUILDKIT=0 docker build --pull=false \
    --label "org.opencontainers.image.title=$title" \
    --label "org.opencontainers.image.version=$version" \
    -t "$image" "$stage" >"$stage/build.log" 2>&1; then
    cat "$stage/build.log" >&2
    echo "$name: docker build of $image failed" >&2
    return 1
  fi
  docker image inspect "$image" --format "$name: {{index .RepoTags 0}} {{.Size}} bytes" >&2
}

# need_build NAME IMAGE FORCE: whether IMAGE must be built (missing, or
# FORCE is set); fails when docker is missing.
need_build() {
  if ! command -v docker >/dev/null 2>&1; then
    echo "$1: docker is not installed" >&2
    exit 1
  fi
  [ -n "$3" ] || ! docker image inspect "$2" >/dev/null 2>&1
}
