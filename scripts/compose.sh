#!/usr/bin/env bash
# `make up` / `make down` / `make logs`: Docker Compose with whichever of `docker compose` (v2) and
# `docker-compose` (1.29, what Debian bookworm ships) this machine has.
#   up    writes .env with fresh secrets and an API key on first use, makes SANDBOX_DIR a shared
#         mount if it is not on one, builds the service and runner images (COMPOSE_BUILD=0: use the
#         ones scripts/build-images.sh made), starts the stack (UP_SERVICES: only those) and waits
#         until /readyz answers.
#   down  stops and removes the containers (volumes are kept; `down -v` removes them too).
#   logs  follows the logs.
#   config  prints the merged configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "compose: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
if [ -n "${COMPOSE_FILES:-}" ]; then  # e.g. "docker-compose.yml docker-compose.ci.yml"
  for f in $COMPOSE_FILES; do COMPOSE+=(-f "$f"); done
fi

new_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }

write_env() {
  [ -f .env ] && return
  local key="ck-$(python3 -c 'import secrets; print(secrets.token_hex(20))')"
  umask 077
  cat >.env <<ENV
# Written by 'make up' on $(date -u +%Y-%m-%d). Secrets for docker-compose.yml; keep this file private.
DJANGO_SECRET_KEY=$(new_secret)
SIGNING_KEY=$(new_secret)
# token:label:rps:burst — see README "Keys"
API_KEYS=$key:default:10:20
ENV
  echo "compose: wrote .env with new secrets and the API key $key"
}

sandbox_dir() {
  local dir
  dir=$(sed -n 's/^SANDBOX_DIR=//p' .env 2>/dev/null | tail -1)
  echo "${SANDBOX_DIR:-${dir:-/var/lib/codeexec-sandbox}}"
}

ensure_shared_mount() {
  # The worker mounts a tmpfs per run under SANDBOX_DIR; the engine sees it only through mount
  # propagation, and Docker refuses an rshared bind whose source is not on a shared mount.
  local dir propagation
  dir=$(sandbox_dir)
  mkdir -p "$dir" 2>/dev/null || sudo mkdir -p "$dir"
  propagation=$(findmnt -n -o PROPAGATION --target "$dir" 2>/dev/null || echo unknown)
  case "$propagation" in
    shared*) return ;;
  esac
  if [ "$(id -u)" = 0 ]; then
    echo "compose: making $dir a shared mount (its filesystem is '$propagation')"
    mountpoint -q "$dir" || mount --bind "$dir" "$dir"
    mount --make-rshared "$dir"
  else
    echo "compose: $dir must be on a shared mount; run as root once:" >&2
    echo "  sudo mount --bind $dir $dir && sudo mount --make-rshared $dir" >&2
    exit 1
  fi
}

wait_ready() {
  local publish url
  publish=${PUBLISH:-$(sed -n 's/^PUBLISH=//p' .env | tail -1)}
  publish=${publish//[\"\']/}
  publish=${publish:-127.0.0.1:8080}
  url="http://127.0.0.1:${publish##*:}/readyz"
  for _ in $(seq 120); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=3)" "$url" 2>/dev/null; then
      echo "compose: ready at ${url%/readyz}"
      READY_URL=${url%/readyz}
      return
    fi
    sleep 2
  done
  echo "compose: $url did not become ready; see 'make logs'" >&2
  exit 1
}

case "${1:-}" in
  up)
    write_env
    ensure_shared_mount
    if [ "${COMPOSE_BUILD:-1}" != 0 ]; then  # COMPOSE_BUILD=0: images from scripts/build-images.sh
      scripts/pip-ca.sh
      "${COMPOSE[@]}" --profile runners build
      rm -rf .build
    fi
    # Signed links point where the web service is published, unless .env or the caller says otherwise.
    if [ -z "${PUBLIC_BASE_URL:-}" ] && ! grep -q '^PUBLIC_BASE_URL=..*' .env; then
      published=${PUBLISH:-$(sed -n 's/^PUBLISH=//p' .env | tail -1)}
      published=${published//[\"\']/}
      published=${published:-127.0.0.1:8080}
      export PUBLIC_BASE_URL="http://localhost:${published##*:}"
    fi
    "${COMPOSE[@]}" up -d ${UP_SERVICES:-}
    wait_ready
    url=$READY_URL
    key=${API_KEYS:-$(sed -n 's/^API_KEYS=//p' .env | tail -1)}; key=${key%%:*}
    [ -n "$key" ] && echo "compose: try  curl -s ${url%/readyz}/v1/runs -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' -d '{\"language\": \"python\", \"code\": \"print(1+1)\"}'"
    ;;
  down) shift; "${COMPOSE[@]}" down "$@" ;;
  logs)  # `make logs` follows the last lines; given options (CI's failure report) are passed as they are
    shift
    if [ $# -eq 0 ]; then set -- -f --tail=200; fi
    "${COMPOSE[@]}" logs "$@" ;;
  config) shift; "${COMPOSE[@]}" config "$@" ;;
  *) echo "usage: $0 up|down|logs|config" >&2; exit 2 ;;
esac
