# Shared steps of the image builds in deploy/images/*/build.sh (sourced, never run): no
# registry is reachable, so an image is a root filesystem of host binaries, the shared libraries
# ldd lists for them and the dynamic loader, handed to `docker import`, and labelled with a
# fingerprint (versions + SHA-256 of the binaries) that makes a second run a no-op.
#
# A build script sources this file and calls, in order:
#   image_args HELP_LINES "$@"         --force / -h; sets FORCE (HELP_LINES: `sed -n` range of
#                                      the script's usage comment, e.g. 2,8)
#   find_bin NAME                      the binary in cargo's bin directory, else on PATH, else ""
#   image_current REF LABEL FPRINT     exits 0 when REF carries LABEL=FPRINT (unless --force)
#   rootfs_new DIR...                  ROOTFS: a fresh directory (removed on exit) with
#                                      usr/local/bin, etc, tmp (1777) and DIR...
#   rootfs_libs BIN...                 copies what ldd lists for BIN... into ROOTFS; sets LIBS
#   rootfs_accounts                    /etc/passwd, group (root, nobody) and nsswitch.conf
#   rootfs_import REF PATH CMD LABELS  `docker import` of ROOTFS as REF with ENV PATH, CMD (JSON)
#                                      and LABELS (`k=v k=v`); prints what was built
# Every function is safe to call again: the scripts stay idempotent.

say() { echo "build.sh: $*"; }
die() { echo "build.sh: $*" >&2; exit 1; }

image_args() {
    local help="$1" arg
    shift
    FORCE=0
    for arg in "$@"; do
        case "$arg" in
            --force) FORCE=1 ;;
            -h|--help) sed -n "${help}p" "$0"; exit 0 ;;
            *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
        esac
    done
}

find_bin() {
    local name="$1" dir="${CARGO_HOME:-$HOME/.cargo}/bin"
    if [[ -x "$dir/$name" ]]; then echo "$dir/$name"; return; fi
    command -v "$name" || true
}

image_current() {
    local ref="$1" label="$2" fingerprint="$3" have
    [[ "$FORCE" == 0 ]] || return 0
    have="$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$ref" 2>/dev/null || true)"
    if [[ "$have" == "$fingerprint" ]]; then
        say "$ref is up to date ($fingerprint), nothing to do (--force rebuilds)"
        exit 0
    fi
    say "building $ref for $fingerprint${have:+ (image has $have)}"
}

rootfs_new() {
    local dir
    ROOTFS="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the path is fixed once made
    trap "rm -rf '$ROOTFS'" EXIT
    mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc" "$ROOTFS/tmp"
    for dir in "$@"; do mkdir -p "$ROOTFS/$dir"; done
    chmod 1777 "$ROOTFS/tmp"
}

# Every absolute path ldd prints (libraries and the loader), copied at the same path.
# Lines look like `libc.so.6 => /lib/.../libc.so.6 (0x..)` or `/lib64/ld-linux-x86-64.so.2 (0x..)`.
rootfs_libs() {
    local b lib
    LIBS="$(for b in "$@"; do ldd "$b" 2>/dev/null || true; done |
        awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
    for lib in $LIBS; do
        cp -L --parents "$lib" "$ROOTFS/"
    done
}

rootfs_accounts() {
    printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' \
        >"$ROOTFS/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
    printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"
}

rootfs_import() {
    local ref="$1" path="$2" cmd="$3" labels="$4"
    tar --numeric-owner -C "$ROOTFS" -c . | docker import \
        --change "ENV PATH=$path" \
        --change "CMD $cmd" \
        --change "LABEL $labels" \
        - "$ref" >/dev/null
    # shellcheck disable=SC2086,SC2116 # the list on one line
    say "built $ref ($(du -sh "$ROOTFS" | cut -f1) rootfs," \
        "$(wc -w <<<"$LIBS") shared objects: $(echo $LIBS))"
}
