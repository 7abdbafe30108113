#!/usr/bin/env bash
# Stops the demo fleet started by deploy/demo/up.sh: the processes recorded in .demo/run/*.pid
# (the WireGuard client's wireguard-go too), the containers the agents started in the demo hosts'
# namespaces, the host and client containers (label vpn-demo=1), the network, and (unless --keep)
# the state in .demo/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEMO="$ROOT/.demo"
NET=vpn-demo
KEEP=0
[[ "${1:-}" == --keep ]] && KEEP=1

say() { echo "demo: $*"; }

# Agents first (so nothing recreates containers), then the rest; each by its recorded pid.
for f in "$DEMO"/run/agent-*.pid "$DEMO"/run/wgclient.pid "$DEMO"/run/www.pid "$DEMO"/run/dest-*.pid \
    "$DEMO"/run/controller.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        say "stopped $(basename "$f" .pid) ($pid)"
    fi
    rm -f "$f"
done

# Containers the agents manage that live in a demo host's namespace.
hosts="$(docker ps -aq --no-trunc --filter label=vpn-demo=1)"
for c in $(docker ps -aq --filter label=vpn-fleet.managed-by=vpn-agent); do
    mode="$(docker inspect -f '{{.HostConfig.NetworkMode}}' "$c" 2>/dev/null || true)"
    target="${mode#container:}"
    [[ "$mode" == container:* ]] || continue
    if [[ "$target" == vpn-demo-* ]] || grep -qx "$target" <<<"$hosts"; then
        docker rm -f -v "$c" >/dev/null && say "removed agent container $c"
    fi
done
if [[ -n "$hosts" ]]; then
    mapfile -t host_ids <<<"$hosts"
    docker rm -f -v "${host_ids[@]}" >/dev/null && say "removed demo hosts"
fi
if docker network inspect "$NET" >/dev/null 2>&1; then
    docker network rm "$NET" >/dev/null && say "removed network $NET"
fi

if [[ "$KEEP" == 0 ]]; then
    rm -rf "$DEMO"
    say "removed $DEMO"
fi
say "down"
