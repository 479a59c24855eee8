#!/usr/bin/env bash
# Register qemu's aarch64 handler with binfmt_misc so linux/arm64 images run on this machine.
# Idempotent; needs root and qemu-user-static. On machines with systemd-binfmt or Docker
# Desktop this is already done; the CI machine has neither, so .ci/run calls this.
set -euo pipefail
binfmt=/proc/sys/fs/binfmt_misc
[[ -e "$binfmt/qemu-aarch64" ]] && exit 0
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
if [[ ! -f "$conf" ]]; then
    echo "qemu-binfmt: $conf missing (apt-get install qemu-user-static)" >&2
    exit 1
fi
[[ -e "$binfmt/register" ]] || mount -t binfmt_misc binfmt_misc "$binfmt"
grep -v '^#' "$conf" | grep . >"$binfmt/register"
echo "qemu-binfmt: aarch64 handler registered ($(head -1 "$binfmt/qemu-aarch64"))"
