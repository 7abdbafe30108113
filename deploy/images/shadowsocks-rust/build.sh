#!/usr/bin/env bash
# Builds the image vpn-fleet/shadowsocks-rust:local without any registry: the ssmanager and
# ssserver binaries from `cargo install shadowsocks-rust`, the shared libraries ldd lists and the
# dynamic loader, in a root filesystem handed to `docker import`.
#
# Usage: build.sh [--force]
#   Skips the build when the image exists and carries the fingerprint (version + SHA-256) of the
#   binaries found now; --force rebuilds anyway. Installs shadowsocks-rust with cargo if missing.
set -euo pipefail

IMAGE="${VPN_SS_IMAGE:-vpn-fleet/shadowsocks-rust}"
TAG="${VPN_SS_TAG:-local}"
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

say() { echo "build.sh: $*"; }

find_bin() {
    local name="$1" dir="${CARGO_HOME:-$HOME/.cargo}/bin"
    if [[ -x "$dir/$name" ]]; then echo "$dir/$name"; return; fi
    command -v "$name" || true
}

SSMANAGER="$(find_bin ssmanager)"
SSSERVER="$(find_bin ssserver)"
if [[ -z "$SSMANAGER" || -z "$SSSERVER" ]]; then
    say "ssmanager/ssserver not found: cargo install shadowsocks-rust --locked (takes a while)"
    cargo install shadowsocks-rust --locked
    SSMANAGER="$(find_bin ssmanager)"
    SSSERVER="$(find_bin ssserver)"
fi
[[ -n "$SSMANAGER" && -n "$SSSERVER" ]] || { echo "build.sh: ssmanager/ssserver still missing" >&2; exit 1; }

VERSION="$("$SSSERVER" --version | awk '{print $2}')"
SUM="$(cat "$SSMANAGER" "$SSSERVER" | sha256sum | cut -c1-16)"
FINGERPRINT="$VERSION-$SUM"
say "binaries: $SSMANAGER $SSSERVER (shadowsocks-rust $VERSION, sha256 $SUM)"

if [[ "$FORCE" == 0 ]]; then
    have="$(docker image inspect -f '{{ index .Config.Labels "vpn-fleet.ss-fingerprint" }}' \
        "$IMAGE:$TAG" 2>/dev/null || true)"
    if [[ "$have" == "$FINGERPRINT" ]]; then
        say "$IMAGE:$TAG is up to date ($FINGERPRINT), nothing to do (--force rebuilds)"
        exit 0
    fi
    say "building $IMAGE:$TAG for $FINGERPRINT${have:+ (image has $have)}"
fi

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
cp "$SSMANAGER" "$SSSERVER" "$ROOTFS/usr/local/bin/"

# Every absolute path ldd prints (libraries and the loader), copied at the same path.
# Lines look like `libc.so.6 => /lib/.../libc.so.6 (0x..)` or `/lib64/ld-linux-x86-64.so.2 (0x..)`.
libs="$(for b in "$SSMANAGER" "$SSSERVER"; do ldd "$b" 2>/dev/null || true; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
for lib in $libs; do
    cp -L --parents "$lib" "$ROOTFS/"
done
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' \
    >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin' \
    --change 'CMD ["ssmanager", "--help"]' \
    --change "LABEL vpn-fleet.ss-version=$VERSION vpn-fleet.ss-fingerprint=$FINGERPRINT" \
    - "$IMAGE:$TAG" >/dev/null
docker tag "$IMAGE:$TAG" "$IMAGE:$VERSION"
say "built $IMAGE:$TAG and $IMAGE:$VERSION ($(du -sh "$ROOTFS" | cut -f1) rootfs," \
    "$(wc -w <<<"$libs") shared objects: $(echo $libs))"
