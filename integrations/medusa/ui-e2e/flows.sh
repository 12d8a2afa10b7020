#!/usr/bin/env bash
# The browser flows, one file after the other (one browser at a time: memory); run by run.sh
# once Medusa and Dust are up. UI_FLOWS="admin" runs only flows/admin.test.mjs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
files=()
if [ -n "${UI_FLOWS:-}" ]; then
    for name in $UI_FLOWS; do files+=("$HERE/flows/$name.test.mjs"); done
else
    files=("$HERE"/flows/*.test.mjs)
fi
node --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"
