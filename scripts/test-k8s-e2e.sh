#!/usr/bin/env bash
# End-to-end tests on a Kubernetes cluster on one machine (tests/k8s_e2e): kmock's API
# server, a test kubelet running the Pods with podman, the images of deploy/docker built
# on a debootstrap base. Installs podman/runc/debootstrap with apt-get when missing and
# writes podman's configuration as docs/../shared notes say works in a sandbox (runc,
# cgroupfs, vfs, explicit nofile/nproc ulimits). Images are cached by content hash
# (scripts/k8s-e2e-images.sh), so a second run on one machine builds nothing.
# Usage: scripts/test-k8s-e2e.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
for tool in podman:podman runc:runc debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ]; then
  echo "test-k8s-e2e: installing$missing" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
fi
export PATH="$PATH:/usr/sbin:/sbin"

# Without an explicit nproc every container fails in a sandbox without CAP_SYS_RESOURCE
# ("error setting rlimit type 6"); vfs because overlay mounts are not allowed there.
write_conf() {  # write_conf FILE CONTENT: only when different (keeps a site's own file)
  if [ ! -f "$1" ] || ! cmp -s "$1" <(printf '%s\n' "$2"); then
    if [ -f "$1" ] && [ ! -f "$1.zexec-orig" ]; then $SUDO cp "$1" "$1.zexec-orig"; fi
    printf '%s\n' "$2" | $SUDO tee "$1" >/dev/null
  fi
}
$SUDO mkdir -p /etc/containers
write_conf /etc/containers/containers.conf '[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
write_conf /etc/containers/storage.conf '[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"'

source scripts/bootstrap.sh

IMAGES=$(bash scripts/k8s-e2e-images.sh)
echo "$IMAGES" >&2
echo "test-k8s-e2e: images ready after $(( $(date +%s) - START ))s" >&2
export ZEXEC_E2E_IMAGES=$(echo $IMAGES)
export ZEXEC_K8S_E2E=1
set +e
.venv/bin/python -m pytest tests/k8s_e2e -p no:cacheprovider "$@"
rc=$?
echo "test-k8s-e2e: done in $(( $(date +%s) - START ))s (pytest exit $rc)" >&2
exit $rc
