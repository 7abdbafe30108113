#!/bin/sh
# Written by vpn-agent for service wireguard: brings wg0 up; the agent adds peers with `wg set`.
set -eu
IP=/usr/local/bin/ip
IF=wg0
$IP link del "$IF" 2>/dev/null || true
if [ "${VPN_WG_USERSPACE:-0}" != 1 ] && $IP link add "$IF" type wireguard 2>/dev/null; then
    MODE=kernel
else
    MODE=userspace
    WG_PROCESS_FOREGROUND=1 wireguard-go "$IF" &
    PID=$!
    i=0
    while [ ! -S "/var/run/wireguard/$IF.sock" ]; do
        i=$((i + 1)); [ "$i" -le 100 ] || { echo "wireguard-go did not start" >&2; exit 1; }
        sleep 0.1
    done
fi
wg set "$IF" listen-port 51820 private-key /var/lib/vpn-agent/run/wireguard/private.key
$IP address add 10.66.0.1/16 dev "$IF"
$IP -6 address add fd66::1/64 dev "$IF" || echo "IPv6 tunnel address fd66::1/64 not set (IPv6 disabled here?)" >&2
$IP link set "$IF" mtu 1380 up
echo "interface $IF up ($MODE), port 51820"
if [ "$MODE" = userspace ]; then
    trap 'kill "$PID" 2>/dev/null; exit 0' TERM INT
    wait "$PID"
else
    trap '$IP link del "$IF" 2>/dev/null; exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
fi
