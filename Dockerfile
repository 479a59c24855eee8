# syntax=docker/dockerfile:1
# pcf-api runtime image: scratch plus the Debian suite's Python, the locked dependencies and the app.
# How it is built, measured and tested: docs/container.md.
#
#   scripts/build-image.sh                      docker or podman; prints sizes, enforces the budget
#   docker buildx build --platform linux/amd64,linux/arm64 -t pcf-api .
#   behind a TLS-intercepting proxy, hand pip its CA as a secret (never a layer):
#     ... --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt
#
# The builder runs on the build machine's own architecture (BUILDPLATFORM) and assembles the
# root file system of the target architecture from Debian packages and wheels made for it, so an
# arm64 image needs emulation only to be run, not to be built.

ARG BASE_IMAGE=debian:bookworm-slim

# --------------------------------------------------------------------------------------------
# checkov:skip=CKV_DOCKER_7: the tag is in BASE_IMAGE's default above (bookworm-slim); checkov does not expand ARGs
FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-eu", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# Build tools for this machine, and the target's Debian packages: downloaded only, never
# installed; deploy/image/assemble.py copies the files the image needs out of them. The image
# runs the suite's own python3 (Debian 12: 3.11, Debian 13: 3.13); /build/packages records which
# alternative of each line of debian-packages.txt the suite has.
COPY deploy/image/debian-packages.txt /build/debian-packages.txt
WORKDIR /build/debs
# DL3008 (pin apt versions) is off for this RUN on purpose: versions come from the base image's
# Debian suite, whose security updates must reach every rebuild; the image declares each one.
# hadolint ignore=DL3008
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$arch" in \
        amd64) binutils="binutils-x86-64-linux-gnu" ;; \
        arm64) binutils="binutils-aarch64-linux-gnu" ;; \
        *) echo "unsupported target architecture: $arch" >&2; exit 1 ;; \
    esac; \
    rm -f /etc/apt/apt.conf.d/docker-clean; \
    if [ "$arch" != "$(dpkg --print-architecture)" ]; then dpkg --add-architecture "$arch"; fi; \
    apt-get update -q; \
    apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates "$binutils"; \
    python="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; \
    sed -e '/^#/d' -e '/^ *$/d' -e "s/{python}/$python/g" /build/debian-packages.txt | while read -r line; do \
        for package in $(echo "$line" | tr '|' ' '); do \
            if apt-get download -q "${package%\?}:$arch" 2>/dev/null || apt-get download -q "${package%\?}" 2>/dev/null; then \
                echo "${package%\?}" >> /build/packages; continue 2; \
            fi; \
        done; \
        case "$line" in *\?) continue ;; esac; \
        echo "no Debian package of '$line' in this suite" >&2; exit 1; \
    done; \
    echo "$arch" > /build/arch; echo "$python" > /build/python

# The locked dependencies, hash-checked, as wheels for the target (no compiler, no emulation).
COPY requirements/build.lock requirements/main.lock /build/requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_ca,required=false \
    if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    case "$(cat /build/arch)" in amd64) machine=x86_64 ;; arm64) machine=aarch64 ;; esac; \
    platforms="manylinux2014_$machine $(seq -f "manylinux_2_%g_$machine" 36 -1 17 | tr '\n' ' ')"; \
    python="$(cat /build/python)"; \
    python3 -m venv /build/venv; \
    /build/venv/bin/pip install -q --require-hashes --no-deps -r /build/requirements/build.lock; \
    PIP_PLATFORM="$platforms" /build/venv/bin/pip install -q --require-hashes --no-deps --no-compile --only-binary=:all: \
        --python-version "$python" --implementation cp --abi "cp$(echo "$python" | tr -d .)" --abi abi3 --abi none \
        --target /build/site -r /build/requirements/main.lock

# Swap the wheels prune.toml maps to Debian packages (cryptography against Debian's OpenSSL);
# prune, strip and zip site-packages; add the interpreter, the standard library, the shared
# libraries they load, CA certificates, accounts and the Debian package declarations.
COPY deploy/image/assemble.py deploy/image/prune.toml /build/
RUN arch="$(cat /build/arch)"; \
    python3 /build/assemble.py deps --site /build/site --arch "$arch" --debs /build/debs \
        --config /build/prune.toml --out /rootfs --work /build/work; \
    python3 /build/assemble.py runtime --debs /build/debs --packages /build/packages \
        --arch "$arch" --config /build/prune.toml --out /rootfs --work /build/work; \
    rm -rf /build/site /build/debs /build/work

# --------------------------------------------------------------------------------------------
# The application alone, so a source change rebuilds only this stage and the last layer.
FROM builder AS app
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN /build/venv/bin/pip wheel -q --no-deps --no-build-isolation --wheel-dir /build/dist /src; \
    /build/venv/bin/pip install -q --no-deps --no-compile --target /build/app-site /build/dist/*.whl; \
    python3 /build/assemble.py app --site /build/app-site --out /approot

# --------------------------------------------------------------------------------------------
FROM scratch AS runtime
# Configuration first and the two file layers last, so that a rebuild after a source change
# redoes only the application layer and the labels (a cheap step on every engine).
ENV PATH=/usr/local/bin:/usr/bin \
    LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PCF_ENVIRONMENT=production
USER 65532:65532
VOLUME ["/tmp"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["pcf-api", "healthcheck"]
ENTRYPOINT ["pcf-api"]
CMD ["serve"]

COPY --from=builder /rootfs/ /
COPY --from=app /approot/ /

ARG VERSION=0.0.0-dev REVISION=unknown SOURCE=unknown
LABEL org.opencontainers.image.title="pcf-api" \
      org.opencontainers.image.description="Production-grade GraphQL API server (notes)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
