#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine (Python 3.11 + pip), then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
