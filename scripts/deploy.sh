#!/usr/bin/env bash
# Install or upgrade pcf-api with Helm, atomically: if the migration hook or the rollout fails
# within the timeout, Helm rolls the release back to the previous revision by itself.
# The change cause goes into the Helm revision's description (`helm history`) and the
# Deployment's kubernetes.io/change-cause annotation (`kubectl rollout history`).
#
#   scripts/deploy.sh [--release pcf-api] [--namespace pcf-api] [--values FILE]… [--set K=V]…
#                     [--image-tag TAG] [--timeout 10m] [--cause TEXT] [--dry-run]
# --dry-run prints the exact commands instead of running them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

release=pcf-api
namespace=pcf-api
timeout=10m
cause=""
dry_run=false
extra=()
while (($#)); do
    case "$1" in
        --release) release="${2:?}"; shift 2 ;;
        --namespace|-n) namespace="${2:?}"; shift 2 ;;
        --values|-f) extra+=(--values "${2:?}"); shift 2 ;;
        --set) extra+=(--set "${2:?}"); shift 2 ;;
        --image-tag) extra+=(--set-string "image.tag=${2:?}"); shift 2 ;;
        --timeout) timeout="${2:?}"; shift 2 ;;
        --cause) cause="${2:?}"; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "deploy: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ -z "$cause" ]]; then
    cause="deploy by ${USER:-unknown} at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if revision="$(git rev-parse --short HEAD 2>/dev/null)"; then cause+=" from $revision"; fi
fi

# The chart names its objects after the release, adding "-pcf-api" unless the name has it.
deployment="$release"
[[ "$release" == *pcf-api* ]] || deployment="$release-pcf-api"
helm="${HELM:-helm}"
# Helm 4 renamed --atomic to --rollback-on-failure (--atomic still works there, deprecated).
if [[ "$("$helm" version --short 2>/dev/null || echo v3)" == v3* ]]; then
    atomic=(--atomic --wait)
else
    atomic=(--rollback-on-failure --wait=watcher)
fi

upgrade=("$helm" upgrade --install "$release" deploy/helm/pcf-api --namespace "$namespace"
    --create-namespace "${atomic[@]}" --wait-for-jobs --timeout "$timeout" --history-max 20
    --description "$cause" "${extra[@]}")
annotate=("${KUBECTL:-kubectl}" --namespace "$namespace" annotate deployment "$deployment" --overwrite
    "kubernetes.io/change-cause=$cause")
status=("${KUBECTL:-kubectl}" --namespace "$namespace" rollout status "deployment/$deployment"
    --timeout "$timeout")

run() {
    if "$dry_run"; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        "$@"
    fi
}
run "${upgrade[@]}"
run "${status[@]}"
run "${annotate[@]}"
