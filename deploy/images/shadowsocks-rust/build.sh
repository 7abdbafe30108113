#!/usr/bin/env bash
# Builds the image vpn-fleet/shadowsocks-rust:local without any registry: the ssmanager and
# ssserver binaries from `cargo install shadowsocks-rust`, the shared libraries ldd lists and the
# dynamic loader, in a root filesystem handed to `docker import` (steps in ../lib.sh).
#
# Usage: build.sh [--force]
#   Skips the build when the image exists and carries the fingerprint (version + SHA-256) of the
#   binaries found now; --force rebuilds anyway. Installs shadowsocks-rust with cargo if missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

IMAGE="${VPN_SS_IMAGE:-vpn-fleet/shadowsocks-rust}"
TAG="${VPN_SS_TAG:-local}"
image_args 2,8 "$@"

SSMANAGER="$(find_bin ssmanager)"
SSSERVER="$(find_bin ssserver)"
if [[ -z "$SSMANAGER" || -z "$SSSERVER" ]]; then
    say "ssmanager/ssserver not found: cargo install shadowsocks-rust --locked (takes a while)"
    cargo install shadowsocks-rust --locked
    SSMANAGER="$(find_bin ssmanager)"
    SSSERVER="$(find_bin ssserver)"
fi
[[ -n "$SSMANAGER" && -n "$SSSERVER" ]] || die "ssmanager/ssserver still missing"

VERSION="$("$SSSERVER" --version | awk '{print $2}')"
SUM="$(cat "$SSMANAGER" "$SSSERVER" | sha256sum | cut -c1-16)"
FINGERPRINT="$VERSION-$SUM"
say "binaries: $SSMANAGER $SSSERVER (shadowsocks-rust $VERSION, sha256 $SUM)"
image_current "$IMAGE:$TAG" vpn-fleet.ss-fingerprint "$FINGERPRINT"

rootfs_new
cp "$SSMANAGER" "$SSSERVER" "$ROOTFS/usr/local/bin/"
rootfs_libs "$SSMANAGER" "$SSSERVER"
rootfs_accounts
rootfs_import "$IMAGE:$TAG" /usr/local/bin '["ssmanager", "--help"]' \
    "vpn-fleet.ss-version=$VERSION vpn-fleet.ss-fingerprint=$FINGERPRINT"
docker tag "$IMAGE:$TAG" "$IMAGE:$VERSION"
say "tagged $IMAGE:$VERSION"
