#!/usr/bin/env bash
# Offline checks of the Helm chart (what CI runs):
#   1. helm lint --strict, with the default values and with every examples/*.yaml;
#   2. helm template with the default values and with every example;
#   3. every rendered document validated with kubernetes-validate --strict against
#      Kubernetes $KUBE_VERSION, plus the chart's policy checks (scripts/chart_checks.py:
#      documented ClusterRole only, no root, resource limits, probes, ...).
# helm comes from scripts/k8s-tools.sh (pinned, fetched once into .tools/).
#
# Usage: scripts/check-chart.sh [CHART_DIR]     (default deploy/helm/zexec)
# Env:   KUBE_VERSION (default 1.31.0), RENDER_DIR (keep rendered manifests there)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHART=$(cd "${1:-$ROOT/deploy/helm/zexec}" && pwd)
KUBE_VERSION=${KUBE_VERSION:-1.31.0}
RELEASE=zexec
NAMESPACE=zexec

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3
fi

BIN=$("$ROOT/scripts/k8s-tools.sh")
HELM="$BIN/helm"
# Keep helm's config and cache out of the user's home.
export HELM_CONFIG_HOME="$ROOT/.tools/helm/config" HELM_CACHE_HOME="$ROOT/.tools/helm/cache" \
       HELM_DATA_HOME="$ROOT/.tools/helm/data"

OUT=${RENDER_DIR:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${RENDER_DIR:-}" ] || trap 'rm -rf "$OUT"' EXIT

values_sets=("default")
shopt -s nullglob
for f in "$CHART"/examples/*.yaml; do values_sets+=("$f"); done

for v in "${values_sets[@]}"; do
  if [ "$v" = default ]; then args=(); name=default; else args=(-f "$v"); name=$(basename "$v" .yaml); fi
  echo "== $name: helm lint --strict"
  "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" "${args[@]}" --namespace "$NAMESPACE" >"$OUT/$name.lint" 2>&1 \
    || { cat "$OUT/$name.lint"; echo "FAILED: helm lint ($name)" >&2; exit 1; }
  echo "== $name: helm template"
  "$HELM" template "$RELEASE" "$CHART" "${args[@]}" --namespace "$NAMESPACE" \
    --kube-version "$KUBE_VERSION" >"$OUT/$name.yaml" 2>"$OUT/$name.err" \
    || { cat "$OUT/$name.err" >&2; echo "FAILED: helm template ($name)" >&2; exit 1; }
done

echo "== kubernetes-validate --strict (Kubernetes $KUBE_VERSION) + policy checks"
files=()
for v in "${values_sets[@]}"; do
  if [ "$v" = default ]; then files+=("$OUT/default.yaml"); else files+=("$OUT/$(basename "$v" .yaml).yaml"); fi
done
"$PY" "$ROOT/scripts/chart_checks.py" --kube-version "$KUBE_VERSION" --readme "$CHART/README.md" "${files[@]}" \
  || { echo "FAILED: rendered manifests" >&2; exit 1; }
echo "chart OK"
