#!/usr/bin/env bash
# Images for the one-machine Kubernetes tests (tests/k8s_e2e), built with podman and
# cached by content hash, so a second run on one machine builds nothing:
#   - the base: a debootstrap'ed Debian bookworm root filesystem with its python3 (3.11)
#     made to look like the official python image (`python`, pip, venv, no PEP 668
#     marker), imported with `podman import` (no registry images can be pulled here);
#   - the apps and server images from deploy/docker/, with that base as a build argument.
# Prints `KEY=image` lines (base, apps, server) on stdout; progress goes to stderr.
# Env: ZEXEC_E2E_CACHE (default /var/tmp/zexec-k8s-e2e).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ZEXEC_E2E_CACHE:-/var/tmp/zexec-k8s-e2e}
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
# The host's CA bundle goes into the base: package indexes may sit behind a TLS proxy
# whose CA only the host trusts.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$CACHE"
log() { echo "k8s-e2e-images: $*" >&2; }

hash_of() {  # sha256 (12 hex) of the given strings and files' contents
  { for x in "$@"; do
      if [ -f "$x" ]; then sha256sum "$x"; else echo "$x"; fi
    done; } | sha256sum | cut -c1-12
}

# ---- base ---------------------------------------------------------------------------
# Bump BASE_RECIPE when the steps below change what the base holds.
BASE_RECIPE=2
BASE_HASH=$(hash_of "$SUITE" "$PACKAGES" "$HOST_CA" "recipe $BASE_RECIPE")
BASE=localhost/zexec-e2e-base:$BASE_HASH
if ! podman image exists "$BASE"; then
  TARBALL=$CACHE/base-$BASE_HASH.tar
  if [ ! -s "$TARBALL" ]; then
    log "debootstrap $SUITE ($PACKAGES), about a minute"
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS"' EXIT
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" >&2
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    [ -f "$HOST_CA" ] && cp "$HOST_CA" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    chmod 755 "$ROOTFS"  # mktemp made it 0700: the image's / would be closed to non-root
    tar -C "$ROOTFS" -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$ROOTFS"
    trap - EXIT
  fi
  log "importing the base as $BASE"
  podman import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    "$TARBALL" "$BASE" >&2
fi
find "$CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "base-$BASE_HASH.tar" -delete
echo "base=$BASE"

# ---- apps and server images ---------------------------------------------------------
# Their inputs: what the .dockerignore files let into the build context, the Dockerfiles,
# and the base.
CONTEXT_FILES=$(cd "$ROOT" && { echo pyproject.toml README.md LICENSE deploy/docker/healthcheck.py;
                               git ls-files -co --exclude-standard src | grep -v __pycache__; } | sort)
build() {  # build KEY DOCKERFILE
  local key=$1 dockerfile=$2 h
  h=$(cd "$ROOT" && hash_of "$BASE" $CONTEXT_FILES "$dockerfile")
  local image=localhost/zexec-e2e-$key:$h
  if ! podman image exists "$image"; then
    log "building $image from $dockerfile"
    (cd "$ROOT" && podman build --network host --layers=false -f "$dockerfile" \
        --build-arg "PYTHON_IMAGE=$BASE" -t "$image" . >&2)
  fi
  echo "$key=$image"
}
APPS=$(build apps deploy/docker/Dockerfile)
SERVER=$(build server deploy/docker/Dockerfile.server)
echo "$APPS"
echo "$SERVER"
# Older builds of these images (earlier sources) are of no more use: drop them, so a
# working machine does not fill its disk with ~700 MB per change of src/.
keep=" ${BASE} ${APPS#apps=} ${SERVER#server=} "
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/zexec-e2e-'); do
  case "$keep" in *" $old "*) ;; *) podman rmi "$old" >/dev/null 2>&1 || true ;; esac
done
