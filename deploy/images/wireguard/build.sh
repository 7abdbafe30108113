#!/usr/bin/env bash
# Builds the image vpn-fleet/wireguard:local without any registry: `wireguard-go` and `wg` from
# the Debian packages wireguard-go and wireguard-tools, `ip` from iproute2 and a static busybox
# (sh, sleep) for the start script, the shared libraries ldd lists and the dynamic loader, in a
# root filesystem handed to `docker import` (steps in ../lib.sh).
#
# Usage: build.sh [--force]
#   Skips the build when the image exists and carries the fingerprint (package versions +
#   SHA-256 of the binaries found now); --force rebuilds anyway. Installs the Debian packages
#   with apt-get when a binary is missing (needs root).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

IMAGE="${VPN_WG_IMAGE:-vpn-fleet/wireguard}"
TAG="${VPN_WG_TAG:-local}"
image_args 2,10 "$@"

# "command package" pairs, installed when the command is missing (idempotent).
need=("wireguard-go wireguard-go" "wg wireguard-tools" "ip iproute2")
missing=()
for pair in "${need[@]}"; do
    read -r cmd pkg <<<"$pair"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ! [[ -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
    missing+=(busybox-static)
fi
if ((${#missing[@]})); then
    [[ "$(id -u)" == 0 ]] || die "missing ${missing[*]} and not root: apt-get install ${missing[*]}"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

WGGO="$(command -v wireguard-go)"
WG="$(command -v wg)"
IP="$(command -v ip)"
BUSYBOX=/bin/busybox
for b in "$WGGO" "$WG" "$IP" "$BUSYBOX"; do [[ -x "$b" ]] || die "$b missing"; done

version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo unknown; }
VERSION="go$(version wireguard-go)-tools$(version wireguard-tools)"
SUM="$(cat "$WGGO" "$WG" "$IP" "$BUSYBOX" | sha256sum | cut -c1-16)"
FINGERPRINT="$VERSION-$SUM"
say "binaries: $WGGO $WG $IP $BUSYBOX ($VERSION, sha256 $SUM)"
image_current "$IMAGE:$TAG" vpn-fleet.wg-fingerprint "$FINGERPRINT"

rootfs_new bin var/run/wireguard
cp "$WGGO" "$WG" "$IP" "$ROOTFS/usr/local/bin/"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in sh sleep cat rm mkdir test kill; do ln -s busybox "$ROOTFS/bin/$applet"; done
rootfs_libs "$WGGO" "$WG" "$IP"
rootfs_accounts
rootfs_import "$IMAGE:$TAG" /usr/local/bin:/bin '["wg", "--version"]' \
    "vpn-fleet.wg-version=$VERSION vpn-fleet.wg-fingerprint=$FINGERPRINT"
