#!/usr/bin/env bash
# Build the apps image and one server image per supported Python minor version.
# Usage: deploy/docker/build-images.sh [REGISTRY_PREFIX]   e.g. registry.example.org/zexec
# Env:   DOCKER (default docker; podman works), TAG (apps image tag, default 0.1.0)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PREFIX=${1:-zexec}
DOCKER=${DOCKER:-docker}
TAG=${TAG:-0.1.0}
# Pinned patch releases of the python:<version>-slim-bookworm base images.
PYTHONS="3.11.13 3.12.11 3.13.5"  # zexec needs Python >= 3.11

cd "$ROOT"
"$DOCKER" build -f deploy/docker/Dockerfile -t "$PREFIX/apps:$TAG" .
for full in $PYTHONS; do
  minor=${full%.*}
  "$DOCKER" build -f deploy/docker/Dockerfile.server --build-arg "PYTHON_VERSION=$full" \
    -t "$PREFIX/server:py$minor" .
done
