#!/usr/bin/env bash
# The browser test (`make test-ui`): Medusa's admin with the Dust plugin's widgets and page (and
# the storefront example) in a real Chromium, against a real Medusa and a real Dust worker.
#
# It reuses the plugin's end-to-end machinery (../e2e/run.sh: npm ci, plugin build, databases,
# Dust's Procfile processes, Medusa start and stop by pid, seeded products) with the admin built
# once (DUST_MEDUSA_E2E_ADMIN=1), without the plugin's unit tests (`make test-medusa` runs them),
# and these flows in place of the API flows:
# every flows/*.test.mjs, run by `node --test` one file after the other.
#
# The browser is Debian's /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs it
# when missing), driven by playwright-core with a fresh profile. No browser is downloaded.
# Screenshots go to $UI_ARTIFACTS (default ui-e2e/artifacts, kept by CI).
#
# Environment: everything ../e2e/run.sh reads (databases, Redis, DUST_MEDUSA_E2E_PORT), and
#   CHROMIUM                 /usr/bin/chromium
#   UI_ARTIFACTS             <this folder>/artifacts   (emptied first)
#   DUST_UI_STOREFRONT_PORT  9001                      a port the storefront flow may serve on
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export UI_ARTIFACTS="${UI_ARTIFACTS:-$HERE/artifacts}"
export DUST_UI_STOREFRONT_PORT="${DUST_UI_STOREFRONT_PORT:-9001}"
export MEDUSA_EXTRA_CORS="http://127.0.0.1:$DUST_UI_STOREFRONT_PORT,http://localhost:$DUST_UI_STOREFRONT_PORT"

[ -x "$CHROMIUM" ] || { echo "error: no browser at $CHROMIUM: apt-get install -y chromium" >&2; exit 1; }
"$CHROMIUM" --version

rm -rf "$UI_ARTIFACTS"
mkdir -p "$UI_ARTIFACTS"
if [ "${DUST_MEDUSA_E2E_REUSE_INSTALL:-}" != 1 ] || [ "${CI:-}" = true ] || [ ! -d "$HERE/node_modules" ]; then
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi

export DUST_MEDUSA_E2E_ADMIN=1
# The plugin's unit tests (the widgets' included) are test-medusa's; here the browser's.
export DUST_MEDUSA_E2E_UNIT_TESTS="${DUST_MEDUSA_E2E_UNIT_TESTS:-0}"
export DUST_MEDUSA_E2E_NAME=test-ui
export DUST_MEDUSA_E2E_FLOWS="bash $HERE/flows.sh"
exec bash "$HERE/../e2e/run.sh"
