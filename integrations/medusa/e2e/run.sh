#!/usr/bin/env bash
# The end-to-end test of the Medusa plugin against a real Medusa and a real Dust worker
# (`make test-medusa`). From a fresh clone: installs the plugin and the store (npm ci), runs the
# plugin's unit tests, builds the plugin and installs it into the store, resets the test's own
# databases, migrates and seeds Medusa, upgrades Dust's schema, starts Dust's Procfile
# processes (worker, requests) and Medusa, creates the products through the admin API, runs the flows
# (node --test flows/e2e.test.mjs), stops what it started by pid, and exits non-zero on any
# failure. Logs stay in $E2E_WORK; on failure their ends are printed.
#
# Environment (defaults are CI's machine: PostgreSQL and Redis on 127.0.0.1, databases of the
# test's own):
#   DUST_MEDUSA_E2E_PG_URL     postgresql://postgres@127.0.0.1:5432  (server, no database)
#   DUST_MEDUSA_E2E_MEDUSA_DB  dust_medusa_e2e         Medusa's database (dropped and created)
#   DUST_MEDUSA_E2E_DUST_DB    dust_medusa_e2e_ledger  Dust's database (dropped and created)
#   DUST_MEDUSA_E2E_REDIS_URL  redis://127.0.0.1:6379  (server, no database number)
#   DUST_MEDUSA_E2E_MEDUSA_REDIS_DB 8, DUST_MEDUSA_E2E_DUST_REDIS_DB 9  (both flushed)
#   DUST_MEDUSA_TEST_REDIS_URL  $DUST_MEDUSA_E2E_REDIS_URL/7  the Redis of the plugin's unit
#                              tests (test/celery-redis.test.ts)
#   DUST_MEDUSA_E2E_PORT       9000                    Medusa's HTTP port
#   VENV                       <repo>/.venv            Dust's virtualenv (make install)
#   DUST_MEDUSA_E2E_ADMIN=1   build Medusa's admin with the plugin's widgets once (medusa build
#                              --admin-only) and serve it: Medusa runs with NODE_ENV=production
#                              (start-medusa.sh) and session cookies without `Secure` over plain
#                              http (medusa-config.ts) (ui-e2e/run.sh)
#   DUST_MEDUSA_E2E_FLOWS      the command run as the flows (default: node --test flows/e2e.test.mjs)
#   DUST_MEDUSA_E2E_NAME       the name in the last line (default: test-medusa)
#   DUST_MEDUSA_E2E_UNIT_TESTS=0  skip the plugin's unit tests (test-ui: test-medusa runs them)
#   DUST_MEDUSA_E2E_REUSE_INSTALL=1  development only (refused under CI=true): keep the installed
#                              node_modules and the built plugin, skip npm ci, the unit tests and the build
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PLUGIN="$(dirname "$HERE")"
REPO="$(cd "$PLUGIN/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac

PG_URL="${DUST_MEDUSA_E2E_PG_URL:-postgresql://postgres@127.0.0.1:5432}"
MEDUSA_DB="${DUST_MEDUSA_E2E_MEDUSA_DB:-dust_medusa_e2e}"
DUST_DB="${DUST_MEDUSA_E2E_DUST_DB:-dust_medusa_e2e_ledger}"
REDIS_URL="${DUST_MEDUSA_E2E_REDIS_URL:-redis://127.0.0.1:6379}"
MEDUSA_REDIS_DB="${DUST_MEDUSA_E2E_MEDUSA_REDIS_DB:-8}"
DUST_REDIS_DB="${DUST_MEDUSA_E2E_DUST_REDIS_DB:-9}"
export DUST_MEDUSA_TEST_REDIS_URL="${DUST_MEDUSA_TEST_REDIS_URL:-$REDIS_URL/7}"

export E2E_WORK="$HERE/.e2e"
export MEDUSA_PORT="${DUST_MEDUSA_E2E_PORT:-9000}"
export MEDUSA_URL="http://127.0.0.1:$MEDUSA_PORT"
export MEDUSA_DATABASE_URL="$PG_URL/$MEDUSA_DB"
export MEDUSA_REDIS_URL="$REDIS_URL/$MEDUSA_REDIS_DB"
export NODE_ENV=development # production would make Medusa's session cookies Secure-only
if [ "${DUST_MEDUSA_E2E_ADMIN:-}" = 1 ]; then
    # start-medusa.sh then runs Medusa with NODE_ENV=production: the admin's build is served
    # only so (development starts Vite's dev server). Not here: npm ci would skip devDependencies.
    export DUST_E2E_ADMIN=1
fi
NAME="${DUST_MEDUSA_E2E_NAME:-test-medusa}"
export DUST_DATABASE_URL="${PG_URL/#postgresql:/postgresql+psycopg:}/$DUST_DB"
export DUST_DATABASE_URL="${DUST_DATABASE_URL/#postgres:/postgresql+psycopg:}"
export DUST_PG_URL="$PG_URL/$DUST_DB" # the same database for psql (the flows poll its inbox)
export DUST_BROKER_URL="$REDIS_URL/$DUST_REDIS_DB"
unset DUST_RESULT_BACKEND
# Dust's configuration for the flows: 0.1 dust per cent (per yen) earned, 1 dust redeems for 1
# cent (1 yen). The flows compute every expected number from these.
export DUST_EARN_RATE="0.1"
export DUST_EARN_RATES='{}'
export DUST_REDEEM_VALUE="1"
export DUST_REDEEM_VALUES='{"usd": "1", "jpy": "1"}'
export DUST_POINTS_TTL_DAYS=365
export DUST_CLI="$VENV/bin/dust"
export E2E_SEED_OUT="$E2E_WORK/seed.json"
export MEDUSA_ADMIN_EMAIL="admin@dust.test" MEDUSA_ADMIN_PASSWORD="dust-e2e-admin"

log() { printf '\n==> [%s] %s\n' "$(date -u +%T)" "$*"; }
started=$SECONDS
dust_pids=()

stop_all() {
    local rc=$?
    set +e
    "$HERE/stop-medusa.sh"
    for pid in "${dust_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid"
    done
    for pid in "${dust_pids[@]}"; do
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$pid" 2>/dev/null
    done
    if [ "$rc" -ne 0 ]; then
        for f in medusa.log dust-worker.log dust-requests.log; do
            [ -f "$E2E_WORK/$f" ] || continue
            printf '\n----- last 150 lines of %s (whole log kept in %s) -----\n' "$f" "$E2E_WORK/$f"
            tail -n 150 "$E2E_WORK/$f"
        done
        printf '\n%s FAILED after %ss\n' "$NAME" "$((SECONDS - started))"
    else
        printf '\n%s passed in %ss\n' "$NAME" "$((SECONDS - started))"
    fi
    exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

rm -rf "$E2E_WORK"
mkdir -p "$E2E_WORK"
[ -x "$DUST_CLI" ] || { echo "error: $DUST_CLI missing: run make install" >&2; exit 1; }

node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || { echo "error: Medusa 2.21 needs Node.js 20 or later, found $(node --version)" >&2; exit 1; }

if [ "${DUST_MEDUSA_E2E_REUSE_INSTALL:-}" = 1 ] && [ "${CI:-}" != true ]; then
    log "reusing the installed store and plugin (DUST_MEDUSA_E2E_REUSE_INSTALL=1)"
else
    if [ "${DUST_MEDUSA_E2E_UNIT_TESTS:-1}" = 0 ]; then
        log "plugin: npm ci, medusa plugin:build"
        (cd "$PLUGIN" && npm ci --no-audit --no-fund --loglevel=error && npx medusa plugin:build)
    else
        log "plugin: npm ci, unit tests, medusa plugin:build"
        (cd "$PLUGIN" && npm ci --no-audit --no-fund --loglevel=error && npm test && npx medusa plugin:build)
    fi

    log "store: npm ci, install the plugin from $PLUGIN"
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
    # A packed copy, not a symlink: the plugin resolves @medusajs/* from the store, one framework.
    # (npm keeps an installed copy of the same version, so the old one goes first.)
    rm -rf "$HERE/node_modules/medusa-plugin-dust"
    (cd "$HERE" && npm install --no-save --install-links --no-audit --no-fund --loglevel=error "$PLUGIN")
    if [ "${DUST_E2E_ADMIN:-}" = 1 ]; then
        log "store: medusa build --admin-only (the dashboard with the plugin's widgets and page)"
        rm -rf "$HERE/.medusa/admin" "$HERE/public/admin"
        (cd "$HERE" && node node_modules/@medusajs/cli/cli.js build --admin-only) \
            >"$E2E_WORK/admin-build.log" 2>&1 || { tail -n 50 "$E2E_WORK/admin-build.log"; exit 1; }
        # `medusa start` serves <store>/public/admin; the admin-only build writes .medusa/admin.
        mkdir -p "$HERE/public"
        mv "$HERE/.medusa/admin" "$HERE/public/admin"
    fi
fi

log "databases: $MEDUSA_DB, $DUST_DB; redis dbs $MEDUSA_REDIS_DB, $DUST_REDIS_DB"
for db in "$MEDUSA_DB" "$DUST_DB"; do
    psql "$PG_URL/postgres" -qAt -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
done
redis-cli -u "$MEDUSA_REDIS_URL" flushdb >/dev/null
redis-cli -u "$DUST_BROKER_URL" flushdb >/dev/null

log "medusa: migrate, seed, admin user"
cd "$HERE"
node node_modules/@medusajs/cli/cli.js db:migrate >"$E2E_WORK/medusa-setup.log" 2>&1 ||
    { tail -n 50 "$E2E_WORK/medusa-setup.log"; exit 1; }
node node_modules/@medusajs/cli/cli.js exec ./src/scripts/seed.ts >>"$E2E_WORK/medusa-setup.log" 2>&1 ||
    { tail -n 50 "$E2E_WORK/medusa-setup.log"; exit 1; }
node node_modules/@medusajs/cli/cli.js user -e "$MEDUSA_ADMIN_EMAIL" -p "$MEDUSA_ADMIN_PASSWORD" \
    >>"$E2E_WORK/medusa-setup.log" 2>&1 || { tail -n 50 "$E2E_WORK/medusa-setup.log"; exit 1; }

log "dust: db upgrade, the Procfile's worker and requests processes"
"$DUST_CLI" db upgrade
# Every Procfile process but beat: events and jobs on `worker`, checkout and admin
# requests on `requests` (the plugin's routes need it).
for name in worker requests; do
    cmd="$(sed -n "s/^$name:[[:space:]]*//p" "$REPO/Procfile")"
    [ -n "$cmd" ] || { echo "error: no $name in $REPO/Procfile" >&2; exit 1; }
    # shellcheck disable=SC2086 # the Procfile's command line, split as a shell would
    (cd "$REPO" && PATH="$VENV/bin:$PATH" exec $cmd) >"$E2E_WORK/dust-$name.log" 2>&1 &
    dust_pids+=("$!")
    echo "$!" >"$E2E_WORK/dust-$name.pid"
done

log "medusa: start; products through the admin API"
"$HERE/start-medusa.sh"
node "$HERE/flows/seed-products.mjs"

log "flows"
if [ -n "${DUST_MEDUSA_E2E_FLOWS:-}" ]; then
    # shellcheck disable=SC2086 # a command line, split as a shell would
    $DUST_MEDUSA_E2E_FLOWS
else
    node --test --test-timeout=900000 "$HERE/flows/e2e.test.mjs"
fi
