#!/usr/bin/env bash
# Copy the monitoring sources into the Helm chart, which can only read files inside itself:
#   deploy/prometheus/alerts.yaml  -> deploy/helm/pcf-api/files/alerts.yaml   (PrometheusRule)
#   deploy/grafana/pcf-api.json    -> deploy/helm/pcf-api/files/pcf-api.json  (dashboard ConfigMap)
# The files under deploy/prometheus and deploy/grafana are the source of truth; edit those.
# Usage: scripts/sync-chart-files.sh [--check]   (--check: exit 1 when a copy differs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

files=(
    "deploy/prometheus/alerts.yaml:deploy/helm/pcf-api/files/alerts.yaml"
    "deploy/grafana/pcf-api.json:deploy/helm/pcf-api/files/pcf-api.json"
)
status=0
for pair in "${files[@]}"; do
    source="${pair%%:*}" copy="${pair#*:}"
    if [[ "${1:-}" == "--check" ]]; then
        if ! cmp -s "$source" "$copy"; then
            echo "$copy differs from $source: run scripts/sync-chart-files.sh" >&2
            status=1
        fi
    else
        cp "$source" "$copy"
    fi
done
exit "$status"
