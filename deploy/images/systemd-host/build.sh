#!/usr/bin/env bash
# Builds `vpn-fleet/systemd-host:local`: a simulated host whose PID 1 is systemd, the target of
# the ansible test (tests/tests/install_ansible.rs) and of systemd_agent_sandbox.rs. It lets the
# roles install, enable and start the real units of deploy/systemd/ with systemctl on a machine
# whose own PID 1 is not systemd.
#
# No registry is reachable, so the image holds only what makes a root file system (the
# merged-/usr symlinks, an /etc with root, a fixed machine-id and every unit preset off) and
# borrows everything else from this machine at run time: the container is started with this
# machine's /usr bind-mounted read-only (systemd, python3 for ansible, nft, tc, ip, ss, nsenter)
# and a tmpfs on /usr/local (where the roles install the binaries). Start it as the test does:
#
#   docker run -d --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
#     --security-opt apparmor=unconfined --stop-signal SIGRTMIN+3 --tmpfs /run --tmpfs /run/lock \
#     --tmpfs /tmp -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v /usr:/usr:ro --tmpfs /usr/local:exec \
#     vpn-fleet/systemd-host:local
#
# (`--privileged` is refused on this machine: its root lacks CAP_SYS_RESOURCE.) Idempotent: the
# image is labelled with the SHA-256 of this script and rebuilt only when the script changed.
#
# Usage: build.sh [--force]
set -euo pipefail

# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
image_args 2,21 "$@"

IMAGE="${VPN_SYSTEMD_HOST_IMAGE:-vpn-fleet/systemd-host:local}"
LABEL=vpn-fleet.fingerprint
FPRINT="script-$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
image_current "$IMAGE" "$LABEL" "$FPRINT"
[[ -x /usr/lib/systemd/systemd ]] || die "this machine has no /usr/lib/systemd/systemd: apt-get install systemd"

rootfs_new root var/lib var/log var/tmp opt run proc sys dev srv home mnt \
    etc/systemd/system etc/systemd/system-preset etc/default
LIBS=""
for l in bin sbin lib lib64; do ln -s "usr/$l" "$ROOTFS/$l"; done
ln -s ../run "$ROOTFS/var/run"
chmod 1777 "$ROOTFS/var/tmp"
chmod 0700 "$ROOTFS/root"
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
    >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' >"$ROOTFS/etc/shadow"
printf 'root:*::\nnogroup:*::\n' >"$ROOTFS/etc/gshadow"
chmod 0640 "$ROOTFS/etc/shadow" "$ROOTFS/etc/gshadow"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"
cp /usr/lib/os-release "$ROOTFS/etc/os-release"
# A machine-id present means "not the first boot": systemd then does not enable every unit of
# this machine's /usr by preset (containerd, postgresql, … would start inside the host).
echo 5c2f0e5d9a0a4f7e8a6b2c1d3e4f5a6b >"$ROOTFS/etc/machine-id"
echo 'disable *' >"$ROOTFS/etc/systemd/system-preset/00-vpn-fleet.preset"
# Units of this machine's /usr that must not run in a simulated host: the Docker socket would
# take over the bind-mounted /run/docker.sock, nftables.service would flush the namespace's rules.
for unit in docker.service docker.socket containerd.service nftables.service \
    systemd-firstboot.service systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service getty@.service console-getty.service postgresql.service v2ray.service; do
    ln -s /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
ln -s /usr/lib/systemd/system/multi-user.target "$ROOTFS/etc/systemd/system/default.target"

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/usr/lib/systemd/systemd"]' \
    --change "LABEL $LABEL=$FPRINT org.opencontainers.image.title=vpn-fleet-systemd-host" \
    - "$IMAGE" >/dev/null
say "built $IMAGE ($FPRINT)"
