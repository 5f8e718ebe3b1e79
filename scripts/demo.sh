#!/usr/bin/env bash
# The whole zexec stack on this machine, then a short demo of remote calls.
#
#   bash scripts/demo.sh          # leaves the stack running; stop it with
#                                 #   .venv/bin/zexec down --state-dir .state
#   bash scripts/demo.sh --down   # stops the stack at the end
#
# Needs only Python 3.11+ and pip: scripts/bootstrap.sh creates .venv and installs zexec.
# The stack's files (stack.json with URLs and tokens, logs, environments) go to .state/.
set -euo pipefail
cd "$(dirname "$0")/.."

DOWN=0
for arg in "$@"; do
  case "$arg" in
    --down) DOWN=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option '$arg' (use --down or --help)" >&2; exit 2 ;;
  esac
done

echo "== installing zexec into .venv (first run takes a minute)"
source scripts/bootstrap.sh
echo "== starting the stack: zexec up --state-dir .state"
.venv/bin/zexec up --state-dir .state
if [ "$DOWN" = 1 ]; then
  trap '.venv/bin/zexec down --state-dir .state' EXIT
fi
.venv/bin/python examples/demo.py .state/stack.json
if [ "$DOWN" = 0 ]; then
  echo
  echo "The stack is still running (.venv/bin/zexec status --state-dir .state)."
  echo "Stop it with: .venv/bin/zexec down --state-dir .state"
fi
