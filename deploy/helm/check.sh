#!/usr/bin/env bash
# Checks the Helm chart for real (`make helm-check`; idempotent, offline but for the registries):
#   1. Helm from the Go module proxy into var/helm/bin (go install, ~3 min the first time),
#      kubernetes-validate from PyPI into var/helm/venv (JSON schemas of each Kubernetes version),
#      KEDA's CRDs from the Go module github.com/kedacore/keda/v2 (config/crd/bases), linked at var/helm/keda-crds;
#   2. helm lint --strict and helm template with the default values and with values-production.yaml;
#   3. the rendered manifests validated against Kubernetes $KUBE_VERSION's schemas and KEDA's (deploy/helm/validate.py,
#      strict: an unknown field is an error). Rendered files: var/helm/rendered/{default,production}.yaml.
#   check.sh tools   only step 1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HELM_VERSION="${PROXYMAGE_HELM_VERSION:-v3.21.4}"
KUBE_VERSION="${PROXYMAGE_KUBE_VERSION:-1.34.0}"
KEDA_VERSION="${PROXYMAGE_KEDA_VERSION:-v2.20.2}"
KUBERNETES_VALIDATE_VERSION=1.37.0
TOOLS="$ROOT/var/helm"
HELM="$TOOLS/bin/helm"
VENV="$TOOLS/venv"
CHART="$ROOT/deploy/helm/proxymage"

log() { echo "[helm-check] $*" >&2; }

tools() {
  mkdir -p "$TOOLS/bin"
  if [ ! -x "$HELM" ] || [ "$(cat "$TOOLS/bin/helm.version" 2>/dev/null)" != "$HELM_VERSION" ]; then
    command -v go >/dev/null || { log "ERROR: Go is needed to install Helm from the Go module proxy"; exit 1; }
    log "installing helm $HELM_VERSION from the Go module proxy (go install, a few minutes)"
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "$HELM_VERSION" >"$TOOLS/bin/helm.version"
  fi
  if [ "$(cat "$VENV/kubernetes-validate.version" 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI into $VENV"
    rm -rf "$VENV"
    UV_PYTHON_DOWNLOADS=never uv venv --quiet --python 3.11 "$VENV"
    uv pip install --quiet --python "$VENV/bin/python" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    echo "$KUBERNETES_VALIDATE_VERSION" >"$VENV/kubernetes-validate.version"
  fi
  local keda_dir
  keda_dir="$(cd "$TOOLS" && go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" ] ||
    { log "ERROR: no KEDA CRDs in github.com/kedacore/keda/v2@$KEDA_VERSION ($keda_dir)"; exit 1; }
  ln -sfn "$keda_dir/config/crd/bases" "$TOOLS/keda-crds"
}

check() {
  tools
  mkdir -p "$TOOLS/rendered"
  local variant values=()
  for variant in default production; do
    values=()
    [ "$variant" = production ] && values=(-f "$CHART/values-production.yaml")
    log "helm lint --strict ($variant values)"
    "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" "${values[@]}" >&2
    log "helm template ($variant values)"
    "$HELM" template proxymage "$CHART" --namespace proxymage --kube-version "$KUBE_VERSION" "${values[@]}" \
      >"$TOOLS/rendered/$variant.yaml"
    log "validating $variant against Kubernetes $KUBE_VERSION and KEDA $KEDA_VERSION"
    "$VENV/bin/python" "$ROOT/deploy/helm/validate.py" --kube-version "$KUBE_VERSION" \
      --keda-crds "$TOOLS/keda-crds" "$TOOLS/rendered/$variant.yaml"
  done
}

case "${1:-check}" in
  tools) tools ;;
  check) check ;;
  *) echo "usage: $0 [check|tools]" >&2; exit 2 ;;
esac
