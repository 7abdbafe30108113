#!/usr/bin/env bash
# Builds the image vpn-fleet/shoes:local without any registry: the shoes binary from
# `cargo install shoes --locked --version 0.3.2`, the shared libraries ldd lists and the dynamic
# loader, in a root filesystem handed to `docker import`.
#
# Usage: build.sh [--force]
#   Skips the build when the image exists and carries the fingerprint (version + SHA-256) of the
#   binary found now; --force rebuilds anyway. Installs shoes with cargo if missing (~12 min).
set -euo pipefail

IMAGE="${VPN_SHOES_IMAGE:-vpn-fleet/shoes}"
TAG="${VPN_SHOES_TAG:-local}"
SHOES_VERSION="${VPN_SHOES_VERSION:-0.3.2}"
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

SHOES="$(find_bin shoes)"
if [[ -z "$SHOES" ]]; then
    say "shoes not found: cargo install shoes --locked --version $SHOES_VERSION (about 12 minutes)"
    cargo install shoes --locked --version "$SHOES_VERSION"
    SHOES="$(find_bin shoes)"
fi
[[ -n "$SHOES" ]] || { echo "build.sh: shoes still missing" >&2; exit 1; }

# `shoes --version` prints `shoes 0.3.2`.
VERSION="$("$SHOES" --version | awk '{print $2}')"
SUM="$(sha256sum "$SHOES" | cut -c1-16)"
FINGERPRINT="$VERSION-$SUM"
say "binary: $SHOES (shoes $VERSION, sha256 $SUM)"

if [[ "$FORCE" == 0 ]]; then
    have="$(docker image inspect -f '{{ index .Config.Labels "vpn-fleet.shoes-fingerprint" }}' \
        "$IMAGE:$TAG" 2>/dev/null || true)"
    if [[ "$have" == "$FINGERPRINT" ]]; then
        say "$IMAGE:$TAG is up to date ($FINGERPRINT), nothing to do (--force rebuilds)"
        exit 0
    fi
    say "building $IMAGE:$TAG for $FINGERPRINT${have:+ (image has $have)}"
fi

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/shoes" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
cp "$SHOES" "$ROOTFS/usr/local/bin/"

# Every absolute path ldd prints (libraries and the loader), copied at the same path.
# Lines look like `libc.so.6 => /lib/.../libc.so.6 (0x..)` or `/lib64/ld-linux-x86-64.so.2 (0x..)`.
libs="$(ldd "$SHOES" 2>/dev/null |
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
    --change 'CMD ["shoes", "--version"]' \
    --change "LABEL vpn-fleet.shoes-version=$VERSION vpn-fleet.shoes-fingerprint=$FINGERPRINT" \
    - "$IMAGE:$TAG" >/dev/null
docker tag "$IMAGE:$TAG" "$IMAGE:$VERSION"
say "built $IMAGE:$TAG and $IMAGE:$VERSION ($(du -sh "$ROOTFS" | cut -f1) rootfs," \
    "$(wc -w <<<"$libs") shared objects: $(echo $libs))"
