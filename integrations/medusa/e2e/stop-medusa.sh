#!/usr/bin/env bash
# Stops the store started by start-medusa.sh, by the pid it recorded.
set -uo pipefail
: "${E2E_WORK:?}"
pidfile="$E2E_WORK/medusa.pid"
[ -f "$pidfile" ] || exit 0
pid="$(cat "$pidfile")"
rm -f "$pidfile"
kill -0 "$pid" 2>/dev/null || exit 0
kill -TERM "$pid"
for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || exit 0
    sleep 0.25
done
kill -KILL "$pid" 2>/dev/null
