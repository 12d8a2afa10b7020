#!/usr/bin/env bash
# Starts the store in the background (the server's own node process, not npx, so that its pid
# is the server's), records the pid in $E2E_WORK/medusa.pid and waits until /health answers.
# Extra environment (e.g. DUST_SKIP_EVENTS) passes through. Used by run.sh and the flows.
set -euo pipefail
cd "$(dirname "$0")"
: "${E2E_WORK:?}" "${MEDUSA_PORT:?}"
log="$E2E_WORK/medusa.log"
printf '\n===== medusa start %s (DUST_SKIP_EVENTS=%s)\n' "$(date -u +%FT%TZ)" "${DUST_SKIP_EVENTS:-}" >>"$log"
node_env="${NODE_ENV:-development}"
# With the admin (DUST_E2E_ADMIN=1, the browser test): its production build is served only
# under NODE_ENV=production; medusa-config.ts keeps the session cookie usable over http.
[ "${DUST_E2E_ADMIN:-}" = 1 ] && node_env=production
PORT="$MEDUSA_PORT" NODE_ENV="$node_env" node node_modules/@medusajs/cli/cli.js start >>"$log" 2>&1 &
pid=$!
echo "$pid" >"$E2E_WORK/medusa.pid"
deadline=$((SECONDS + ${MEDUSA_START_TIMEOUT:-180}))
until node -e '
  require("http").get({ host: "127.0.0.1", port: process.argv[1], path: "/health", agent: false },
    (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on("error", () => process.exit(1))' "$MEDUSA_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "error: medusa exited while starting; see $log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "error: medusa not answering on port $MEDUSA_PORT; see $log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "medusa is up on port $MEDUSA_PORT (pid $pid)"
