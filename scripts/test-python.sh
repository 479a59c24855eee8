#!/usr/bin/env bash
# Run the unit and integration tests on a Debian suite's own Python (the one the image of that
# suite runs), in a throwaway container: the suite's python3 with the dev lock, the source copied
# in, the host's network for the shared PostgreSQL and Redis the integration tests use (their
# private servers run inside, from the suite's packages). Tests marked host_only (prometheus,
# promtool, node, or the CAP_NET_ADMIN that a socket filter needs) are left to `make test`.
#
#   scripts/test-python.sh [SUITE] [PYTEST ARGS...]     default SUITE: trixie (Python 3.13)
#
# Needs root, podman or docker, and debootstrap when the suite's base image is missing
# (scripts/debian-base.sh). PIP_CA: as for scripts/build-image.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/engine.sh
. scripts/lib/engine.sh
pcf_pick_engine || { echo "test-python: no container engine (install podman or docker)" >&2; exit 1; }

suite="${1:-trixie}"
(($#)) && shift
base="localhost/debian:$suite-slim"
image="localhost/pcf-api-test:$suite"
bash scripts/debian-base.sh "$base"

pip_ca="${PIP_CA:-/etc/ssl/certs/ca-certificates.crt}"
build=(--build-arg "BASE_IMAGE=$base")
[[ -f "$pip_ca" ]] && build+=(--secret "id=pip_ca,src=$pip_ca")
# podman honours the Containerfile's SHELL (bash -eu -o pipefail) only in the docker format.
[[ "$(basename "$ENGINE")" == podman ]] && build+=(--format docker)
"$ENGINE" build -q "${build[@]}" -t "$image" \
    -f scripts/test-python.Containerfile requirements >/dev/null

# The work tree (with .git: the `make run` tests copy a clean checkout from it) without the host's
# virtualenvs, caches and build output; pcf-api installed from it as a wheel.
run='tar -C /repo --exclude=./.venv --exclude=./.venv-tools --exclude=./build \
        --exclude=./node_modules --exclude="*/node_modules" --exclude="*/__pycache__" -cf - . \
        | tar -C /work -xf -
    /venv/bin/pip install -q --no-deps --no-build-isolation /work
    ln -s /venv /work/.venv  # where the docs tests find the installed commands, as on the host
    cd /work
    /venv/bin/python --version
    exec /venv/bin/python -m pytest tests/unit tests/integration -m "not host_only" \
        -p no:cacheprovider -q "$@"'
# pip inside (the `make run` tests install the runtime set) trusts what pip on the host trusts.
trust=()
[[ -f "$pip_ca" ]] && trust=(-v "$pip_ca:/run/pip-ca.pem:ro" -e PIP_CERT=/run/pip-ca.pem)
"$ENGINE" run --rm --network host --tmpfs /work:exec -v "$PWD:/repo:ro" "${trust[@]}" \
    -e PCF_TEST_POSTGRES_DSN -e PCF_TEST_REDIS_URL "$image" bash -euc "$run" test-python "$@"
