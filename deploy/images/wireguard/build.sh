#!/usr/bin/env bash
# Builds the image vpn-fleet/wireguard:local without any registry: `wireguard-go` and `wg` from
# the Debian packages wireguard-go and wireguard-tools, `ip` from iproute2 and a static busybox
# (sh, sleep) for the start script, the shared libraries ldd lists and the dynamic loader, in a
# root filesystem handed to `docker import`.
#
# Usage: build.sh [--force]
#   Skips the build when the image exists and carries the fingerprint (package versions +
#   SHA-256 of the binaries found now); --force rebuilds anyway. Installs the Debian packages
#   with apt-get when a binary is missing (needs root).
set -euo pipefail

IMAGE="${VPN_WG_IMAGE:-vpn-fleet/wireguard}"
TAG="${VPN_WG_TAG:-local}"
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

say() { echo "build.sh: $*"; }
die() { echo "build.sh: $*" >&2; exit 1; }

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

if [[ "$FORCE" == 0 ]]; then
    have="$(docker image inspect -f '{{ index .Config.Labels "vpn-fleet.wg-fingerprint" }}' \
        "$IMAGE:$TAG" 2>/dev/null || true)"
    if [[ "$have" == "$FINGERPRINT" ]]; then
        say "$IMAGE:$TAG is up to date ($FINGERPRINT), nothing to do (--force rebuilds)"
        exit 0
    fi
    say "building $IMAGE:$TAG for $FINGERPRINT${have:+ (image has $have)}"
fi

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp" "$ROOTFS/var/run/wireguard"
chmod 1777 "$ROOTFS/tmp"
cp "$WGGO" "$WG" "$IP" "$ROOTFS/usr/local/bin/"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in sh sleep cat rm mkdir test kill; do ln -s busybox "$ROOTFS/bin/$applet"; done

# Every absolute path ldd prints (libraries and the loader), copied at the same path.
libs="$(for b in "$WGGO" "$WG" "$IP"; do ldd "$b" 2>/dev/null || true; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
for lib in $libs; do
    cp -L --parents "$lib" "$ROOTFS/"
done
printf 'root:x:0:0:root:/:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\n' >"$ROOTFS/etc/group"

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/bin' \
    --change 'CMD ["wg", "--version"]' \
    --change "LABEL vpn-fleet.wg-version=$VERSION vpn-fleet.wg-fingerprint=$FINGERPRINT" \
    - "$IMAGE:$TAG" >/dev/null
say "built $IMAGE:$TAG ($(du -sh "$ROOTFS" | cut -f1) rootfs," \
    "$(wc -w <<<"$libs") shared objects: $(echo $libs))"
