#!/usr/bin/env bash
# Build, then run every test with bun test; end with one plain summary line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
bun() { sh "$PWD/scripts/bun" "$@"; }
bun scripts/build.ts || { echo "0 passed, 1 failed"; exit 1; }
out=$(mktemp)
bun test --timeout 60000 "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
pass=$(grep -Eo '^ *[0-9]+ pass$' "$out" | tail -1 | tr -dc 0-9)
fail=$(grep -Eo '^ *[0-9]+ fail$' "$out" | tail -1 | tr -dc 0-9)
rm -f "$out"
echo "${pass:-0} passed, ${fail:-0} failed"
[ "${pass:-0}" -gt 0 ] || rc=1
exit $rc
