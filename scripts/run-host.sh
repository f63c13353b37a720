#!/usr/bin/env bash
# `make run`'s servers: one Dramatiq worker process and gunicorn, on this host, until either ends or
# the user stops them (Ctrl-C, SIGTERM, SIGHUP).
#
# Each server gets its own process group (set -m), so a Ctrl-C on the terminal reaches this shell and
# make, not the servers: this shell then sends each server's parent ONE SIGTERM and waits for both.
# Dramatiq's parent forwards every signal it gets to its worker process and the worker takes a second
# one as "kill now", skipping its shutdown (the running runs' clean-up, the warm sandboxes' removal);
# a terminal's SIGINT to the whole group plus a `kill 0` was two.
# Usage: scripts/run-host.sh PYTHON GUNICORN PORT WORKER_THREADS WEB_WORKERS WEB_THREADS
set -uo pipefail
[ $# -eq 6 ] || { echo "usage: $0 PYTHON GUNICORN PORT WORKER_THREADS WEB_WORKERS WEB_THREADS" >&2; exit 2; }
python=$1 gunicorn=$2 port=$3 worker_threads=$4 web_workers=$5 web_threads=$6

set -m
"$python" manage.py rundramatiq --processes 1 --threads "$worker_threads" &
worker=$!
"$gunicorn" codeexec_site.wsgi -b "0.0.0.0:$port" -k gthread \
  --workers "$web_workers" --threads "$web_threads" --timeout 200 --graceful-timeout 30 &
web=$!

stopping=
stop() {
  [ -n "$stopping" ] && return
  stopping=1
  kill -TERM "$worker" "$web" 2>/dev/null
}
trap 'stop' INT TERM HUP

# Until one server ends (it failed, or the user stopped them): then stop the other, and wait for both.
wait -n "$worker" "$web"
status=$?
stop
while ! wait "$worker" "$web"; do
  # A signal interrupts wait (status > 128): wait again, as long as either server still runs.
  kill -0 "$worker" 2>/dev/null || kill -0 "$web" 2>/dev/null || break
done
exit "$status"
