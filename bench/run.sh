#!/usr/bin/env bash
# Run the zexec vs Ray benchmark (see bench/README.md). Arguments go to bench/run.py;
# `bash bench/run.sh attack ...` runs the under-attack benchmark (bench/attack.py) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  . scripts/bootstrap.sh
fi
if [ "${1:-}" = attack ]; then  # the broker under attack (bench/attack.py)
  shift
  exec .venv/bin/python bench/attack.py "$@"
fi
exec .venv/bin/python bench/run.py "$@"
