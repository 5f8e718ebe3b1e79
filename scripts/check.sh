#!/usr/bin/env bash
# Every check CI runs, in order (the README's test command; .ci/run runs this):
#   1. the test suite (scripts/test.sh; arguments go to pytest here),
#   2. the path most users take: the built wheel in a fresh venv, zexec up, the demo,
#      zexec down (scripts/test-wheel.sh, about a minute),
#   3. Kubernetes for real on this machine: podman pods from our images, the chart's
#      control plane as containers (scripts/test-k8s-e2e.sh; installs podman, runc and
#      debootstrap with apt-get when missing; about 4 min cold, 2 min warm).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test.sh "$@"
bash scripts/test-wheel.sh
bash scripts/test-k8s-e2e.sh -q
