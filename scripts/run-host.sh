#!/usr/bin/env bash
# `make run`'s servers: one Dramatiq worker process and gunicorn, on this host, until either ends or
# the user stops them (Ctrl-C, SIGTERM, SIGHUP).
#
# Each server gets its own process group (set -m), so a Ctrl-C on the terminal reaches this shell and
# make, not the servers: this shell then sends each server's parent ONE SIGTERM and waits for both.
# Dramatiq's parent forwards every signal it gets to its worker process and the worker takes a second
# one as "kill now", skipping its shutdown (the running runs' clean-up, the warm sandboxes' removal);
# a terminal's SIGINT to the whole group plus a `kill 0` was two. A third stop signal (Ctrl-C again,
# twice) kills both process groups at once. The servers read nothing from the terminal (stdin is
# /dev/null: a background process group reading it would be stopped).
# Usage: scripts/run-host.sh PYTHON GUNICORN PORT WORKER_THREADS WEB_WORKERS WEB_THREADS
set -uo pipefail
[ $# -eq 6 ] || { echo "usage: $0 PYTHON GUNICORN PORT WORKER_THREADS WEB_WORKERS WEB_THREADS" >&2; exit 2; }
python=$1 gunicorn=$2 port=$3 worker_threads=$4 web_workers=$5 web_threads=$6

worker= web= requested=0 termed=" "
# Each started server that has not had its SIGTERM gets it (then a SIGCONT: a stopped server would not
# act on it); from the third request on, both process groups are killed.
signal_servers() {
  local pid
  for pid in $worker $web; do
    if ((requested >= 3)); then
      kill -KILL -- "-$pid" 2>/dev/null
    elif ((requested >= 1)) && [[ $termed != *" $pid "* ]]; then
      kill -TERM "$pid" 2>/dev/null
      kill -CONT "$pid" 2>/dev/null
      termed+="$pid "
    fi
  done
}
# Set before the servers start: a signal meanwhile must not leave one running with nobody to stop it.
trap 'requested=$((requested + 1)); ((requested != 3)) || echo "run-host: killing both servers" >&2; signal_servers' \
  INT TERM HUP

set -m
"$python" manage.py rundramatiq --processes 1 --threads "$worker_threads" </dev/null &
worker=$!
signal_servers
"$gunicorn" codeexec_site.wsgi -b "0.0.0.0:$port" -k gthread \
  --workers "$web_workers" --threads "$web_threads" --timeout 200 --graceful-timeout 30 </dev/null &
web=$!
signal_servers

# Until one server ends (it failed, or the user stopped them): then stop the other, and wait for each.
wait -n "$worker" "$web"
status=$?
((requested)) || requested=1
signal_servers
for pid in "$worker" "$web"; do
  # A signal interrupts wait (status > 128): wait again, as long as that server still runs.
  while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" 2>/dev/null
  done
done
exit "$status"
