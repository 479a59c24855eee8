#!/usr/bin/env bash
# Make a local debian:<suite>-slim equivalent for machines that cannot pull from a registry.
#
#   scripts/debian-base.sh [IMAGE]        default IMAGE: localhost/debian:bookworm-slim
#
# The suite is the tag's first word (trixie-slim -> trixie, bookworm-slim -> bookworm). The
# official debian:<suite>-slim is itself a debootstrap --variant=minbase tree; this builds
# the same from the Debian mirror that the machine's apt sources already use and imports it. The
# root file system is cached as a tarball in ${PCF_CACHE_DIR:-/var/cache/pcf-api}, so a rerun
# only imports (seconds). Needs root and debootstrap. Only the build machine's own architecture
# is needed: the Dockerfile's builder stage runs natively and cross-assembles other targets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/engine.sh
. scripts/lib/engine.sh
pcf_pick_engine || { echo "debian-base: no container engine" >&2; exit 1; }

image="${1:-localhost/debian:bookworm-slim}"
tag="${image##*:}"
suite="${tag%%-*}"
arch="$(dpkg --print-architecture)"
cache_dir="${PCF_CACHE_DIR:-/var/cache/pcf-api}"
tarball="$cache_dir/debian-$suite-minbase-$arch.tar"

if "$ENGINE" image inspect "$image" >/dev/null 2>&1; then
    echo "debian-base: $image already present"
    exit 0
fi

# The apt source files that name the Debian archive: the first deb822 URIs line or the first
# one-line "deb URL" entry, so nothing is hard-coded.
sources=()
for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
    [[ -f "$file" ]] && grep -qE '^[^#]*debian' "$file" && sources+=("$file")
done
mirror=""
for file in "${sources[@]}"; do
    mirror="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit} /^deb / && $2 !~ /security/ {print $2; exit}' "$file")"
    [[ -n "$mirror" ]] && break
done
if [[ -z "$mirror" ]]; then
    echo "debian-base: no Debian mirror found in the apt sources" >&2
    exit 1
fi

if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || { echo "debian-base: install debootstrap" >&2; exit 1; }
    mkdir -p "$cache_dir"
    rootfs="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
    chmod 755 "$rootfs"  # the image's /: mktemp makes it 0700, which locks out every other user
    trap 'rm -rf "$rootfs"' EXIT
    echo "debian-base: debootstrap $suite ($arch) from $mirror"
    started=$SECONDS
    debootstrap --variant=minbase --arch="$arch" "$suite" "$rootfs" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 \
        || { tail -20 "$cache_dir/debootstrap.log" >&2; exit 1; }
    # The machine's sources (suite, updates and security), as the official image has, with the
    # machine's own suite name replaced by the base's (a bookworm machine building trixie).
    host_suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    rm -f "$rootfs/etc/apt/sources.list"
    for file in "${sources[@]}"; do
        case "$file" in
            /etc/apt/sources.list) target="$rootfs/etc/apt/sources.list" ;;
            *) target="$rootfs/etc/apt/sources.list.d/$(basename "$file")" ;;
        esac
        if [[ -n "$host_suite" && "$host_suite" != "$suite" ]]; then
            perl -pe "s/(?<![\\w-])\Q$host_suite\E(?=[\\s-]|\\z)/$suite/g" "$file" >"$target"
        else
            cp "$file" "$target"
        fi
    done
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    echo "debian-base: root file system cached in $tarball ($((SECONDS - started)) s)"
fi

"$ENGINE" import --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
echo "debian-base: imported $image"
