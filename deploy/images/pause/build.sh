#!/usr/bin/env bash
# Builds `vpn-fleet/pause:local`: the tiny image of a "host" container whose only job is to hold a
# network namespace. The end-to-end harness and the demo run one per simulated VPN host; the agent
# runs inside that namespace (nsenter) and its service containers join it (`container:NAME`).
#
# No registry is reachable, so the image is a `docker import` of a root filesystem holding one
# statically linked busybox (Debian package `busybox-static`). Idempotent: an existing image is
# kept unless --force.
#
# Usage: build.sh [--force]
set -euo pipefail

IMAGE="${VPN_PAUSE_IMAGE:-vpn-fleet/pause:local}"
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ "$FORCE" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "pause image: $IMAGE already present"
    exit 0
fi

BUSYBOX="${BUSYBOX:-/bin/busybox}"
# `ldd` fails on a static binary: that is what we want here (a dynamic one would miss its libc).
if ! [[ -x "$BUSYBOX" ]] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "pause image: need a static busybox at $BUSYBOX: apt-get install -y busybox-static" >&2
    exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
cp "$BUSYBOX" "$rootfs/bin/busybox"
for applet in sh sleep ls cat ip ps; do
    ln -s busybox "$rootfs/bin/$applet"
done
# busybox's sleep takes plain seconds; ~68 years is "forever" for a test host.
tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/bin/sleep", "2147483647"]' \
    --change 'LABEL org.opencontainers.image.title=vpn-fleet-pause' \
    - "$IMAGE" >/dev/null
echo "pause image: built $IMAGE"
