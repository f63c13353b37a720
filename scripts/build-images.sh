#!/usr/bin/env bash
# Build codeexec's images on a machine without an image registry:
#   1. the Debian base (tag debian:bookworm-slim by default) with debootstrap + docker import, from the
#      apt mirror this machine already uses (read from its apt sources, never hard-coded);
#   2. the runner image of each language from runners/<lang>/Dockerfile and the service image
#      (codeexec:latest, ./Dockerfile; SERVICE_IMAGE=0 skips it), with docker build --network=host.
# The base is reused when present (REBUILD=1 makes it again). Run as root with a Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${DEBIAN_SUITE:-bookworm}"
LANGUAGES="${LANGUAGES:-python node ruby php go}"
REBUILD="${REBUILD:-0}"

have_image() { [ "$REBUILD" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

apt_mirror() {
  # The first Debian archive URI of the machine's apt sources (deb822 .sources or one-line .list).
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources | grep -v -- '-security' | head -1 || true)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' \
      /etc/apt/sources.list | grep -v -- '-security' | head -1 || true)
  fi
  [ -n "$uri" ] || { echo "build-images: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
  echo "$uri"
}

if have_image "$BASE_IMAGE"; then
  echo "build-images: reusing $BASE_IMAGE"
else
  command -v debootstrap >/dev/null || { echo "build-images: apt-get install debootstrap" >&2; exit 1; }
  mirror=$(apt_mirror)
  rootfs=$(mktemp -d /tmp/codeexec-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-images: debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >/tmp/codeexec-debootstrap.log 2>&1 \
    || { tail -20 /tmp/codeexec-debootstrap.log >&2; exit 1; }
  # Slim like the official -slim images: no apt lists, caches, docs or man pages.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build-images: imported $BASE_IMAGE"
fi

# The runner images and the service image are always built: Docker's layer cache makes an unchanged
# image a matter of seconds, and a changed Dockerfile or service code is never served stale.
build() {  # build TAG CONTEXT [DOCKERFILE]
  echo "build-images: building $1"
  docker build --network=host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$1" "$2" \
    >"/tmp/codeexec-build-${1%%:*}.log" 2>&1 || { tail -30 "/tmp/codeexec-build-${1%%:*}.log" >&2; exit 1; }
}
for lang in $LANGUAGES; do
  build "codeexec-runner-$lang:latest" "runners/$lang"
done
if [ "${SERVICE_IMAGE:-1}" = 1 ]; then
  scripts/pip-ca.sh
  build codeexec:latest .
  rm -rf .build
fi
echo "build-images: done"
