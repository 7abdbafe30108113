#!/usr/bin/env bash
# Idempotent setup of this machine (Debian, as root) for the end-to-end tests and the demo:
#   1. Debian packages: iproute2 (ip, tc), nftables, iptables, util-linux (nsenter), python3,
#      busybox-static (the pause image), curl, procps, docker.io, v2ray (the real engine of the
#      Xray API test), wireguard-go and wireguard-tools (the WireGuard image and the e2e client)
#      — only those missing; systemd (systemd-analyze and systemd-sysusers for the unit checks);
#      tmux (the terminal the `vpn tui` end-to-end test drives);
#   2. `cargo install shadowsocks-rust --locked` (sslocal, ssserver, ssmanager) if missing —
#      several minutes on 2 cores —, `cargo install shoes --locked` (the VLESS + Reality engine
#      of the tests, 12 minutes on an idle 2-core machine, far more under load) and cargo-nextest if missing;
#   2b. ansible from PyPI (`ansible`: ansible-core plus the community.docker collection) for the
#      ansible roles' test, if `ansible-playbook` or that collection is missing;
#   3. a Docker daemon that answers `docker info` (started in the background if it does not);
#   4. the local images: every `deploy/images/*/build.sh` (each is idempotent).
# Nothing is pulled from a container registry.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# The shoes release the VLESS tests and deploy/images/shoes were written against.
SHOES_VERSION=0.3.2

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "must run as root (apt-get, dockerd, network namespaces)"

# --- 1. Debian packages: "command package" pairs; a package is installed when its command is missing.
need=(
    "ip iproute2" "tc iproute2" "nft nftables" "iptables iptables" "nsenter util-linux"
    "setpriv util-linux"
    "python3 python3" "curl curl" "ps procps" "docker docker.io"
    "v2ray v2ray" "openssl openssl"
    "wireguard-go wireguard-go" "wg wireguard-tools"
    "systemd-analyze systemd" "systemd-sysusers systemd"
    "tmux tmux"
)
missing=()
for pair in "${need[@]}"; do
    read -r cmd pkg <<<"$pair"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# The pause image needs a *static* busybox (ldd fails on it).
if ! [[ -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
    missing+=(busybox-static)
fi
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's v2ray package enables a service listening on 0.0.0.0:10086; the tests start their own.
if command -v systemctl >/dev/null && systemctl is-enabled v2ray >/dev/null 2>&1; then
    systemctl disable --now v2ray >/dev/null 2>&1 || true
fi

# --- 2. Rust tools from crates.io.
if ! command -v sslocal >/dev/null || ! command -v ssserver >/dev/null \
    || ! command -v ssmanager >/dev/null; then
    say "installing shadowsocks-rust (sslocal, ssserver, ssmanager) with cargo: several minutes"
    cargo install shadowsocks-rust --locked
fi
if ! command -v shoes >/dev/null; then
    say "installing shoes $SHOES_VERSION (VLESS + Reality server and client) with cargo: about 12 minutes"
    cargo install shoes --locked --version "$SHOES_VERSION"
fi
if ! command -v cargo-nextest >/dev/null; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

# --- 2b. ansible for tests/tests/install_ansible.rs: the `ansible` package brings ansible-core
# and the community.docker connection the test reaches its simulated hosts with.
if ! command -v ansible-playbook >/dev/null 2>&1 \
    || ! ansible-doc -t connection community.docker.docker >/dev/null 2>&1; then
    say "installing ansible (ansible-core + community.docker) from PyPI"
    python3 -m pip install --quiet ansible 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages ansible
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

# --- 3. Docker daemon.
if ! docker info >/dev/null 2>&1; then
    say "docker does not answer: starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || die "dockerd did not come up in 60 s; see /var/log/dockerd.log"
fi

# --- 4. Local images.
for script in "$ROOT"/deploy/images/*/build.sh; do
    [[ -e "$script" ]] || continue
    say "image: $(basename "$(dirname "$script")")"
    bash "$script"
done
say "ready"
