# shellcheck shell=bash
# Pick the container engine and, where needed, the project's podman settings.
#
# Source it from a script (`. scripts/lib/engine.sh`), or run `bash scripts/lib/engine.sh` to
# print the result as NAME=VALUE lines (the container tests read it that way).
#
#   ENGINE            docker when a Docker daemon answers, else podman; CONTAINER_ENGINE overrides
#   CONTAINERS_CONF   set to deploy/podman/*.conf only for podman run by root on a machine with
#   CONTAINERS_STORAGE_CONF   cgroup v1/hybrid (crun fails there, see docs/container.md), unless
#                     the caller set them or PCF_PODMAN_CONFIG=system; PCF_PODMAN_CONFIG=project
#                     forces them.

_pcf_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

pcf_pick_engine() {
    if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
        ENGINE="$CONTAINER_ENGINE"
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        ENGINE=""
        return 1
    fi
    export ENGINE
    if [[ "$(basename "$ENGINE")" == podman && -z "${CONTAINERS_CONF:-}" ]]; then
        local mode="${PCF_PODMAN_CONFIG:-auto}"
        if [[ "$mode" == auto ]]; then
            mode=system
            if [[ "$(id -u)" == 0 && "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]]; then
                mode=project
            fi
        fi
        if [[ "$mode" == project ]]; then
            export CONTAINERS_CONF="$_pcf_root/deploy/podman/containers.conf"
            export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$_pcf_root/deploy/podman/storage.conf}"
        fi
    fi
    return 0
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    pcf_pick_engine || { echo "no container engine: install podman or docker" >&2; exit 1; }
    echo "ENGINE=$ENGINE"
    [[ -n "${CONTAINERS_CONF:-}" ]] && echo "CONTAINERS_CONF=$CONTAINERS_CONF"
    [[ -n "${CONTAINERS_STORAGE_CONF:-}" ]] && echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
    exit 0
fi
