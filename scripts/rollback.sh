#!/usr/bin/env bash
# Undo a release: Helm rolls back to the previous revision (or --revision N) and waits for the
# pods; for kubectl users of deploy/kubernetes/, `kubectl rollout undo` does the same for the
# Deployment. The migration hook does not run on a rollback: migrations are kept backward
# compatible with the previous release, so the older code runs on the newer schema.
#
#   scripts/rollback.sh [--release pcf-api] [--namespace pcf-api] [--revision N]
#                       [--kubectl] [--timeout 10m] [--dry-run]
# --kubectl: `kubectl rollout undo deployment/RELEASE [--to-revision N]` instead of helm.
# --dry-run prints the exact commands instead of running them.
set -euo pipefail

release=pcf-api
namespace=pcf-api
revision=""
timeout=10m
use_kubectl=false
dry_run=false
while (($#)); do
    case "$1" in
        --release) release="${2:?}"; shift 2 ;;
        --namespace|-n) namespace="${2:?}"; shift 2 ;;
        --revision) revision="${2:?}"; shift 2 ;;
        --timeout) timeout="${2:?}"; shift 2 ;;
        --kubectl) use_kubectl=true; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "rollback: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ -n "$revision" && ! "$revision" =~ ^[0-9]+$ ]]; then
    echo "rollback: --revision wants a number" >&2
    exit 2
fi

# The chart names its objects after the release, adding "-pcf-api" unless the name has it.
deployment="$release"
[[ "$release" == *pcf-api* ]] || deployment="$release-pcf-api"
helm="${HELM:-helm}"
kubectl="${KUBECTL:-kubectl}"
run() {
    if "$dry_run"; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        "$@"
    fi
}

if "$use_kubectl"; then
    undo=("$kubectl" --namespace "$namespace" rollout undo "deployment/$deployment")
    if [[ -n "$revision" ]]; then undo+=(--to-revision "$revision"); fi
    run "${undo[@]}"
else
    # Without a revision helm rolls back to the previous one (revision 0).
    run "$helm" history "$release" --namespace "$namespace" --max 5
    run "$helm" rollback "$release" ${revision:+"$revision"} --namespace "$namespace" \
        --wait --timeout "$timeout" --cleanup-on-fail
fi
run "$kubectl" --namespace "$namespace" rollout status "deployment/$deployment" --timeout "$timeout"
