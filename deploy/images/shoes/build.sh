#!/usr/bin/env bash
# Builds the image vpn-fleet/shoes:local without any registry: the shoes binary from
# `cargo install shoes --locked --version 0.3.2`, the shared libraries ldd lists and the dynamic
# loader, in a root filesystem handed to `docker import` (steps in ../lib.sh).
#
# Usage: build.sh [--force]
#   Skips the build when the image exists and carries the fingerprint (version + SHA-256) of the
#   binary found now; --force rebuilds anyway. Installs shoes with cargo if missing (~12 min).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

IMAGE="${VPN_SHOES_IMAGE:-vpn-fleet/shoes}"
TAG="${VPN_SHOES_TAG:-local}"
SHOES_VERSION="${VPN_SHOES_VERSION:-0.3.2}"
image_args 2,8 "$@"

SHOES="$(find_bin shoes)"
if [[ -z "$SHOES" ]]; then
    say "shoes not found: cargo install shoes --locked --version $SHOES_VERSION (about 12 minutes)"
    cargo install shoes --locked --version "$SHOES_VERSION"
    SHOES="$(find_bin shoes)"
fi
[[ -n "$SHOES" ]] || die "shoes still missing"

# `shoes --version` prints `shoes 0.3.2`.
VERSION="$("$SHOES" --version | awk '{print $2}')"
SUM="$(sha256sum "$SHOES" | cut -c1-16)"
FINGERPRINT="$VERSION-$SUM"
say "binary: $SHOES (shoes $VERSION, sha256 $SUM)"
image_current "$IMAGE:$TAG" vpn-fleet.shoes-fingerprint "$FINGERPRINT"

rootfs_new etc/shoes
cp "$SHOES" "$ROOTFS/usr/local/bin/"
rootfs_libs "$SHOES"
rootfs_accounts
rootfs_import "$IMAGE:$TAG" /usr/local/bin '["shoes", "--version"]' \
    "vpn-fleet.shoes-version=$VERSION vpn-fleet.shoes-fingerprint=$FINGERPRINT"
docker tag "$IMAGE:$TAG" "$IMAGE:$VERSION"
say "tagged $IMAGE:$VERSION"
