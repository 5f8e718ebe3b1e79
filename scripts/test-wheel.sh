#!/usr/bin/env bash
# The path most users take, end to end, outside the repository:
#   build the wheel (and check its metadata with twine), install it with the server
#   extra into a fresh venv made by plain `python -m venv` + pip, run `zexec up` from a
#   temporary directory, run examples/demo.py against it (its numpy environment is
#   built by the stack, getting zexec from the stack's own installation, not an index),
#   `zexec down`, and check that no process of that installation is left.
#
#   bash scripts/test-wheel.sh          (CI runs it after the main suite: .ci/run)
#
# Needs what scripts/bootstrap.sh needs (Python 3.11+ with pip) and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
source scripts/bootstrap.sh  # the repository's .venv: uv to build with, twine to check

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zexec-wheel.XXXXXX")
STATE=$WORK/state
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started ))s] $*"; }

leftovers() {
  # Every process of this run has $WORK in its command line (its interpreter, its env
  # or its state directory); list them (pid and command), excluding this script's own.
  ps -eo pid=,args= | awk -v work="$WORK" -v self=$$ \
    'index($0, work) && $1 != self && $0 !~ /awk -v work/ {print}'
}

finish() {
  code=$?
  if [ -x "$WORK/venv/bin/zexec" ] && [ -f "$STATE/stack.json" ]; then
    "$WORK/venv/bin/zexec" down --state-dir "$STATE" --grace 5 >/dev/null 2>&1 || true
  fi
  if [ "$code" != 0 ]; then
    for log in "$STATE"/logs/*.log "$STATE"/orchestrator/logs/*.log; do
      [ -f "$log" ] && { echo "---- $log (last lines)"; tail -n 30 "$log"; }
    done
  fi
  rm -rf "$WORK"
  exit "$code"
}
trap finish EXIT

step "building the wheel"
rm -rf build  # setuptools' staging directory: a stale one could leak old files in
.venv/bin/uv build --quiet --wheel --out-dir "$WORK/dist" .
rm -rf build
WHEEL=$(ls "$WORK"/dist/zexec-*.whl)
.venv/bin/twine check --strict "$WHEEL"

step "installing $(basename "$WHEEL")[server] into a fresh venv (python -m venv + pip)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "$WHEEL[server]" numpy  # numpy: the demo itself imports it here, on the client side

mkdir "$WORK/run"
cd "$WORK/run"  # nothing of the repository on sys.path from here on
step "zexec up (from $PWD)"
"$WORK/venv/bin/zexec" up --state-dir "$STATE"
test -f "$STATE/stack.json"

step "examples/demo.py against it"
"$WORK/venv/bin/python" "$REPO/examples/demo.py" "$STATE/stack.json"

step "zexec down"
"$WORK/venv/bin/zexec" down --state-dir "$STATE"
for _ in $(seq 50); do  # stopped processes may take a moment to be reaped
  [ -z "$(leftovers)" ] && break
  sleep 0.1
done
left=$(leftovers)
if [ -n "$left" ]; then
  echo "test-wheel: processes left after zexec down:" >&2
  echo "$left" >&2
  exit 1
fi
step "passed: the wheel installs, serves the demo and stops cleanly"
