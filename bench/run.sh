#!/usr/bin/env bash
# Run the zexec vs Ray benchmark (see bench/README.md). Arguments go to bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  . scripts/bootstrap.sh
fi
exec .venv/bin/python bench/run.py "$@"
