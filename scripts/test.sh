#!/usr/bin/env bash
# Build, type-check (tsc --noEmit, unused locals and parameters are errors), check the formatting (Biome), then run every test
# with bun test; end with one plain summary line "N passed, N failed" (a failed type-check counts
# as one failure).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
bun() { sh "$PWD/scripts/bun" "$@"; }
bun scripts/build.ts || { echo "0 passed, 1 failed"; exit 1; }
typefail=0
if [ $# -eq 0 ]; then
  echo "typecheck: tsc --noEmit"
  bun node_modules/typescript/bin/tsc --noEmit -p . || { typefail=1; echo "typecheck: FAILED"; }
  echo "format: biome format (npm run format:check)"
  sh scripts/biome format . || { typefail=$((typefail + 1)); echo "format: FAILED (npm run format fixes it)"; }
fi
out=$(mktemp)
bun test --timeout 60000 "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
pass=$(grep -Eo '^ *[0-9]+ pass$' "$out" | tail -1 | tr -dc 0-9)
fail=$(grep -Eo '^ *[0-9]+ fail$' "$out" | tail -1 | tr -dc 0-9)
# CI keeps only the end of what a run prints: say again, last, what each failed test printed
# (the lines between the previous test's result and its own "(fail)" line, at most 60)
awk '/^\(pass\)|^\(skip\)|^\(todo\)|^test\/.*\.test\.ts:$/ { n = 0; next }
     /^\(fail\)/ { if (!(($0) in seen)) { seen[$0] = 1; print "=== " $0; s = n > 60 ? n - 60 : 0; for (i = s; i < n; i++) print buf[i % 61]; } n = 0; next }
     { buf[n % 61] = $0; n++ }' "$out" | tail -400
rm -f "$out"
fail=$(( ${fail:-0} + typefail ))
echo "${pass:-0} passed, ${fail} failed"
[ "${pass:-0}" -gt 0 ] || rc=1
[ "$typefail" -eq 0 ] || rc=1
exit $rc
