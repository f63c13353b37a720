#!/usr/bin/env bash
# The Compose stack for CI's end-to-end tests (tests/compose): web and worker from docker-compose.yml
# with docker-compose.ci.yml (host network, the host's PostgreSQL and Redis; no bridge is made), the
# images from scripts/build-images.sh. Published ports are dropped from the merged file, since Docker
# refuses them with the host network and Compose merges port lists instead of replacing them.
#   .ci/compose-stack.sh up     start it and print the variables the tests read
#   .ci/compose-stack.sh logs   its warnings and errors, then the last lines (after a failed test)
#   .ci/compose-stack.sh down   remove it
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=codeexec-ci
export DJANGO_SECRET_KEY="ci-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export SIGNING_KEY="ci-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export CODEEXEC_COMPOSE_KEY=ci-compose-key
export API_KEYS="$CODEEXEC_COMPOSE_KEY:ci-compose:1000:1000"
export PORT="${CODEEXEC_COMPOSE_PORT:-18080}"
export PUBLISH="127.0.0.1:$PORT"
export PUBLIC_BASE_URL="http://127.0.0.1:$PORT"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/codeexec_compose"
export REDIS_URL="redis://127.0.0.1:6379/13"
export SANDBOX_DIR=/var/lib/codeexec-ci-sandbox
export COMPOSE_BUILD=0 UP_SERVICES="--no-deps web worker"

merged=/tmp/codeexec-ci-compose.yml
COMPOSE_FILES="docker-compose.yml docker-compose.ci.yml" scripts/compose.sh config \
  | python3 -c '
import sys, yaml
config = yaml.safe_load(sys.stdin)
for service in config["services"].values():
    service.pop("ports", None)
yaml.safe_dump(config, sys.stdout)
' >"$merged"
export COMPOSE_FILES="$merged"

case "${1:-}" in
  up)
    scripts/compose.sh up >&2
    echo "export CODEEXEC_COMPOSE_URL=http://127.0.0.1:$PORT CODEEXEC_COMPOSE_KEY=$CODEEXEC_COMPOSE_KEY"
    ;;
  logs)
    # Bounded in time: a wedged engine must not hang CI's report of the failure.
    timeout 60 scripts/compose.sh logs --no-color --tail=2000 web worker </dev/null >/tmp/codeexec-ci-compose-tail.log 2>&1 || true
    echo "== compose stack: warnings and errors (last 80) =="
    grep -E '"level": ?"(WARNING|ERROR|CRITICAL)"|Traceback' /tmp/codeexec-ci-compose-tail.log | tail -80 || true
    echo "== compose stack: last 40 lines =="
    tail -40 /tmp/codeexec-ci-compose-tail.log
    ;;
  down)
    timeout 30 scripts/compose.sh logs --no-color --tail=100 >/tmp/codeexec-ci-compose.log 2>&1 </dev/null || true
    scripts/compose.sh down -v --remove-orphans >&2
    ;;
  *) echo "usage: $0 up|logs|down" >&2; exit 2 ;;
esac
