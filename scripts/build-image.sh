#!/usr/bin/env bash
# Build the pcf-api image with docker or podman (whichever works), then print the layer
# breakdown, the uncompressed and compressed sizes and where every megabyte goes; fail when the
# image is over its size budget.
#
#   scripts/build-image.sh [--platform linux/amd64|linux/arm64] [--tag IMAGE] [--local-base]
#
# Environment (all optional):
#   IMAGE                 tag (default localhost/pcf-api:dev, or ...:dev-arm64 for a foreign arch)
#   PLATFORM              target platform (default: this machine's)
#   BASE_IMAGE            builder base, whose Debian suite the image is made of (default
#                         debian:bookworm-slim, pulled by the engine; with --local-base,
#                         localhost/debian:bookworm-slim, or the suite BASE_IMAGE names, built
#                         by debian-base.sh)
#   PCF_LOCAL_BASE=1      same as --local-base: build the base with debootstrap (no registry)
#   PIP_CA                CA bundle handed to pip as the build secret pip_ca (default: the
#                         system bundle, so a TLS-intercepting proxy works; never in a layer)
#   MAX_MB, MAX_COMPRESSED_MB   the size budget (see docs/container.md)
#   CONTAINER_ENGINE      force docker or podman
# Output: the report on stdout, and build/image-<arch>.json with the figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/engine.sh
. scripts/lib/engine.sh

platform="${PLATFORM:-}"
image="${IMAGE:-}"
local_base="${PCF_LOCAL_BASE:-0}"
while (($#)); do
    case "$1" in
        --platform) platform="$2"; shift 2 ;;
        --tag) image="$2"; shift 2 ;;
        --local-base) local_base=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
done

pcf_pick_engine || { echo "build-image: no container engine (install podman or docker)" >&2; exit 1; }
engine="$(basename "$ENGINE")"

case "$(uname -m)" in
    x86_64) native=amd64 ;;
    aarch64|arm64) native=arm64 ;;
    *) native="$(uname -m)" ;;
esac
platform="${platform:-linux/$native}"
arch="${platform#linux/}"
if [[ -z "$image" ]]; then
    image="localhost/pcf-api:dev"
    [[ "$arch" != "$native" ]] && image="localhost/pcf-api:dev-$arch"
fi
max_mb="${MAX_MB:-50}"
max_compressed_mb="${MAX_COMPRESSED_MB:-50}"

if [[ "$local_base" == 1 ]]; then
    BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm-slim}"
    bash scripts/debian-base.sh "$BASE_IMAGE"
fi
base_image="${BASE_IMAGE:-debian:bookworm-slim}"

version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
revision="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ "$revision" != unknown && -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    revision="$revision-dirty"
fi
source_url="$(git config --get remote.origin.url 2>/dev/null || true)"
source_url="${source_url:-unknown}"

args=(
    --platform "$platform"
    --build-arg "BASE_IMAGE=$base_image"
    --build-arg "VERSION=$version"
    --build-arg "REVISION=$revision"
    --build-arg "SOURCE=$source_url"
    --tag "$image"
)
pip_ca="${PIP_CA:-/etc/ssl/certs/ca-certificates.crt}"
[[ -f "$pip_ca" ]] && args+=(--secret "id=pip_ca,src=$pip_ca")
if [[ "$engine" == podman ]]; then
    # HEALTHCHECK needs the docker format; podman 4 does not set BUILDPLATFORM by itself.
    args+=(--format docker --layers --build-arg "BUILDPLATFORM=linux/$native")
    build=("$ENGINE" build)
else
    export DOCKER_BUILDKIT=1
    build=("$ENGINE" build)
    if "$ENGINE" buildx version >/dev/null 2>&1; then build=("$ENGINE" buildx build --load); fi
fi

mkdir -p build
echo "build-image: $engine, $platform, base $base_image -> $image"
started=$(date +%s.%N)
set +e
"${build[@]}" "${args[@]}" . 2>&1 | tee "build/image-build-$arch.log" | grep -E '^\[|^STEP|^Successfully|Using cache|^ERROR|rror:'
status=${PIPESTATUS[0]}
set -e
elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
if [[ "$status" != 0 ]]; then
    tail -40 "build/image-build-$arch.log" >&2
    echo "build-image: build failed after ${elapsed} s (log: build/image-build-$arch.log)" >&2
    exit "$status"
fi
cached=$(grep -c 'Using cache\|CACHED' "build/image-build-$arch.log" || true)
echo "build-image: built $image in ${elapsed} s ($cached steps from cache)"

archive="$(mktemp -d)/image.tar"
trap 'rm -rf "$(dirname "$archive")"' EXIT
if [[ "$engine" == podman ]]; then
    "$ENGINE" save -q --format docker-archive -o "$archive" "$image"
else
    "$ENGINE" save -o "$archive" "$image"
fi
python3 scripts/image_report.py "$archive" --max-mb "$max_mb" \
    --max-compressed-mb "$max_compressed_mb" --json "build/image-$arch.json" \
    --build-seconds "$elapsed"
