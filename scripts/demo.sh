#!/usr/bin/env bash
# The main job, end to end: start a counting process, checkpoint it, kill it, restore it, and
# watch it carry on from where it stopped (same PID, same count).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./criu-bun
work=$(mktemp -d /tmp/criu-bun-demo.XXXXXX)
trap '[ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"' EXIT

echo "== criu-bun check"
$BIN check

# a python3 process counting in a dict, logging each step to a file
cat > "$work/count.py" <<'PY'
import time, sys
state = {"n": 0}
log = open(sys.argv[1], "a", buffering=1)
while True:
    state["n"] += 1
    log.write(f"{state['n']}\n")
    time.sleep(0.05)
PY
setsid python3 "$work/count.py" "$work/count.log" </dev/null >/dev/null 2>&1 &
pid=$!
# wait (up to 20 s) until it has counted a few steps: a busy machine starts python3 slowly
count() { tail -n1 "$work/count.log" 2>/dev/null || echo 0; }
for _ in $(seq 200); do [ "$(count)" -ge 10 ] && break; sleep 0.1; done
echo "== started python3 (pid $pid); it has counted to $(tail -n1 "$work/count.log")"

mkdir -p "$work/images"
echo "== criu-bun dump -t $pid -D $work/images"
$BIN dump -t "$pid" -D "$work/images" --display-stats
wait "$pid" 2>/dev/null || true
before=$(count)
echo "== process is gone ($(kill -0 "$pid" 2>/dev/null && echo alive || echo dead)); last count $before"
ls "$work/images"
$BIN show --dir "$work/images" ps

echo "== criu-bun restore -d -D $work/images"
$BIN restore -d -D "$work/images"
# the restored process carries on counting: wait (up to 20 s) for the count to move past the dump's
for _ in $(seq 200); do [ "$(count)" -gt "$before" ] && break; sleep 0.1; done
after=$(count)
echo "== restored pid $pid is $(kill -0 "$pid" 2>/dev/null && echo running || echo NOT running); count went $before -> $after"
if [ "$after" -gt "$before" ]; then
  echo "== demo OK: the process carried on where it stopped"
else
  echo "== demo FAILED" >&2; exit 1
fi
