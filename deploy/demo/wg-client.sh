#!/usr/bin/env bash
# A WireGuard client for the demo fleet, from a `.conf` exactly as `vpn users link USER
# --protocol wireguard --conf` printed it: a network namespace of its own (the pause container
# `vpn-demo-wgclient` on the demo network, labelled so deploy/demo/down.sh removes it), Debian's
# `wireguard-go` and `wg` in it, configured the way wg-quick would: `wg setconf` takes the keys
# (`wg-quick strip` drops Address/DNS/MTU), `ip` applies Address and MTU, and the full tunnel
# (AllowedIPs 0.0.0.0/0) is routed with wg-quick's fwmark rule, without its exception for the
# LAN — the demo network *is* this client's LAN, and the hosts are on it. DNS is not applied.
#
# Usage: wg-client.sh CONF     bring the client up (replacing a previous one)
#        wg-client.sh --down   take it down
# Then run anything through the tunnel with:
#   nsenter --net="$(deploy/demo/wg-client.sh --netns)" -- curl http://HOST:8000/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEMO="$ROOT/.demo"
NET=vpn-demo
NAME=vpn-demo-wgclient
IFACE=wgdemo0
TABLE=51820

die() { echo "wg-client: $*" >&2; exit 1; }
netns() { echo "/proc/$(docker inspect -f '{{.State.Pid}}' "$NAME")/ns/net"; }
in_ns() { nsenter --net="$(netns)" -- "$@"; }

down() {
    if [[ -f "$DEMO/run/wgclient.pid" ]]; then
        kill "$(cat "$DEMO/run/wgclient.pid")" 2>/dev/null || true
        rm -f "$DEMO/run/wgclient.pid"
    fi
    docker rm -f "$NAME" >/dev/null 2>&1 || true
}

case "${1:-}" in
    --down) down; exit 0 ;;
    --netns) netns; exit 0 ;;
    ""|-h|--help) sed -n '2,14p' "$0"; exit 2 ;;
esac
CONF="$1"
[[ -r "$CONF" ]] || die "cannot read $CONF"
for tool in wireguard-go wg wg-quick ip nsenter; do
    command -v "$tool" >/dev/null || die "$tool missing (deploy/scripts/setup.sh installs it)"
done
docker network inspect "$NET" >/dev/null 2>&1 || die "no network $NET: run deploy/demo/up.sh"

field() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$CONF" | head -n1; }
addresses="$(field Address)"
mtu="$(field MTU)"
allowed="$(field AllowedIPs)"
[[ -n "$addresses" ]] || die "$CONF has no Address"

down
docker run -d --name "$NAME" --hostname wgclient --network "$NET" --label vpn-demo=1 \
    vpn-fleet/pause:local >/dev/null
mkdir -p "$DEMO/run" "$DEMO/logs"
# wg-quick names the interface after the file: strip a copy called after ours.
stripped="$(mktemp -d)"
trap 'rm -rf "$stripped"' EXIT
cp "$CONF" "$stripped/$IFACE.conf"
wg-quick strip "$stripped/$IFACE.conf" >"$stripped/setconf"
chmod 600 "$stripped/setconf"

nohup nsenter --net="$(netns)" -- wireguard-go -f "$IFACE" >"$DEMO/logs/wgclient.log" 2>&1 &
echo $! >"$DEMO/run/wgclient.pid"
for _ in $(seq 1 50); do
    [[ -S "/var/run/wireguard/$IFACE.sock" ]] && break
    sleep 0.1
done
[[ -S "/var/run/wireguard/$IFACE.sock" ]] || die "wireguard-go did not start; see $DEMO/logs/wgclient.log"
in_ns wg setconf "$IFACE" "$stripped/setconf"
IFS=, read -ra addrs <<<"$addresses"
for a in "${addrs[@]}"; do
    a="${a// /}"
    # The demo network has no IPv6: only the IPv4 tunnel address is used.
    [[ "$a" == *:* ]] || in_ns ip address add "$a" dev "$IFACE"
done
in_ns ip link set "$IFACE" mtu "${mtu:-1420}" up
if [[ "$allowed" == *0.0.0.0/0* ]]; then
    in_ns wg set "$IFACE" fwmark "$TABLE"
    in_ns ip route add default dev "$IFACE" table "$TABLE"
    in_ns ip rule add not fwmark "$TABLE" table "$TABLE"
else
    IFS=, read -ra nets <<<"$allowed"
    for n in "${nets[@]}"; do
        n="${n// /}"
        [[ "$n" == *:* ]] || in_ns ip route add "$n" dev "$IFACE"
    done
fi
echo "wg-client: $IFACE up in $NAME ($addresses); run commands through it with"
echo "  nsenter --net=$(netns) -- curl http://HOST:8000/"
