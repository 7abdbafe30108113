#!/usr/bin/env bash
# Starts a local demo fleet in ./.demo/ and returns (daemons run in the background):
#   - vpn-controller on UDP $VPN_DEMO_PORT (default 7443), data in .demo/controller;
#   - two simulated VPN hosts, each a `vpn-fleet/pause:local` container with its own network
#     namespace on the Docker network `vpn-demo`, a vpn-agent running inside that namespace
#     (nsenter) and the service containers it starts sharing it;
#   - Shadowsocks (TCP 20000 up), VLESS + Reality on shoes (21000 up), an HTTP/SOCKS5 proxy
#     (22000 up) and WireGuard (UDP 51820, tunnel subnet 10.66.0.0/24) deployed on both, user
#     `demo` added, and a small web page served on port 8000 inside host 1's namespace;
#   - self-checks with real clients from the exact printed artefacts, each fetching that page at
#     host 1's own address: sslocal from the ss:// link (and 127.0.0.1:8000 refused: the server
#     does not relay to its host's loopback), curl with the socks5:// link, and a WireGuard
#     client in a namespace of its own (deploy/demo/wg-client.sh, wireguard-go + wg) from
#     host 1's `.conf`, left up for you to try.
# Then prints the user's links, the `.conf` and how to try each. Stop everything with
# deploy/demo/down.sh.
#
# Env: VPN_DEMO_PORT (controller UDP port), VPN_DEMO_PROFILE (debug|release, default debug).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
DEMO="$ROOT/.demo"
NET=vpn-demo
PORT="${VPN_DEMO_PORT:-7443}"
PROFILE="${VPN_DEMO_PROFILE:-debug}"
HOSTS=(host1 host2)

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; echo "demo: deploy/demo/down.sh cleans up what was started" >&2; exit 1; }

# Polls "$@" once a second for at most $1 seconds.
wait_for() {
    local secs="$1"; shift
    for _ in $(seq 1 "$secs"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

for f in "$DEMO"/run/*.pid; do
    [[ -f "$f" ]] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then
        die "a demo is already up in $DEMO (stop it with deploy/demo/down.sh)"
    fi
    rm -f "$f"
done
trap 'echo "demo: failed; deploy/demo/down.sh cleans up what was started" >&2' ERR

deploy/scripts/setup.sh
if [[ "$PROFILE" == release ]]; then
    cargo build --release --workspace --bins
else
    cargo build --workspace --bins
fi
BIN="$ROOT/target/$PROFILE"
export VPN_CONFIG="$DEMO/vpn.toml"
export NO_COLOR=1 # plain-text daemon logs in .demo/logs
mkdir -p "$DEMO/run" "$DEMO/logs" "$DEMO/www"

# --- the network every demo host sits on; its gateway is this machine.
docker network inspect "$NET" >/dev/null 2>&1 \
    || docker network create --label vpn-demo=1 "$NET" >/dev/null
GW="$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' "$NET" | awk '{print $1}')"
[[ -n "$GW" ]] || die "network $NET has no gateway"

# --- controller.
if [[ ! -f "$VPN_CONFIG" ]]; then
    "$BIN/vpn-controller" init --data-dir "$DEMO/controller" \
        --listen "0.0.0.0:$PORT" --public-address "$GW:$PORT"
fi
nohup "$BIN/vpn-controller" run --data-dir "$DEMO/controller" \
    >"$DEMO/logs/controller.log" 2>&1 &
echo $! >"$DEMO/run/controller.pid"
wait_for 30 "$BIN/vpn" servers list -o json \
    || die "controller did not answer within 30 s; see $DEMO/logs/controller.log"
say "controller up at $GW:$PORT (log: .demo/logs/controller.log)"

# --- hosts and their agents.
netns() { echo "/proc/$(docker inspect -f '{{.State.Pid}}' "vpn-demo-$1")/ns/net"; }
for h in "${HOSTS[@]}"; do
    docker inspect "vpn-demo-$h" >/dev/null 2>&1 \
        || docker run -d --name "vpn-demo-$h" --hostname "$h" --network "$NET" \
            --label vpn-demo=1 vpn-fleet/pause:local >/dev/null
    if [[ ! -d "$DEMO/agent-$h" ]]; then
        join="$("$BIN/vpn" servers add "$h" -o plain | head -n1)"
        nsenter --net="$(netns "$h")" -- "$BIN/vpn-agent" join "$join" --data-dir "$DEMO/agent-$h"
    fi
    nohup nsenter --net="$(netns "$h")" -- "$BIN/vpn-agent" run --data-dir "$DEMO/agent-$h" \
        --network-mode "container:vpn-demo-$h" >"$DEMO/logs/agent-$h.log" 2>&1 &
    echo $! >"$DEMO/run/agent-$h.pid"
done

all_online() {
    "$BIN/vpn" servers list -o json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
want = set(sys.argv[1:])
rows = [r.get("server", r) for r in rows]  # the fields of a host sit under "server", next to its health
sys.exit(0 if want <= {r["name"] for r in rows if r.get("online")} else 1)' "${HOSTS[@]}"
}
wait_for 30 all_online || die "agents not online within 30 s; see $DEMO/logs/agent-*.log"
say "agents online: ${HOSTS[*]}"

# --- a web page inside host 1's namespace, on all its addresses (loopback too, so the
# self-check can show the tunnel refusing 127.0.0.1).
echo "Hello from inside ${HOSTS[0]}: you came through the tunnel." >"$DEMO/www/index.html"
nohup nsenter --net="$(netns "${HOSTS[0]}")" -- python3 -m http.server 8000 --bind 0.0.0.0 \
    --directory "$DEMO/www" >"$DEMO/logs/www.log" 2>&1 &
echo $! >"$DEMO/run/www.pid"

# --- the site VLESS + Reality borrows its handshakes from: a TLS 1.3 server inside every host
# (`localhost:8443`; in production this is a real site such as www.example.com:443).
if [[ ! -f "$DEMO/www/dest.key" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$DEMO/www/dest.key" -out "$DEMO/www/dest.crt" >/dev/null 2>&1 \
        || die "openssl could not make the demo's TLS certificate"
fi
for h in "${HOSTS[@]}"; do
    nohup nsenter --net="$(netns "$h")" -- python3 -c '
import http.server, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), http.server.SimpleHTTPRequestHandler)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()' "$DEMO/www/dest.crt" "$DEMO/www/dest.key" >"$DEMO/logs/dest-$h.log" 2>&1 &
    echo $! >"$DEMO/run/dest-$h.pid"
done

# --- services and user (idempotent enough for a re-run on kept data).
"$BIN/vpn" services deploy shadowsocks --port 20000 --all-servers \
    || say "services deploy failed (already deployed?)"
# The shoes engine: Xray, the production default, cannot be fetched on this machine.
"$BIN/vpn" services deploy vless --port 21000 --engine shoes --sni localhost \
    --dest localhost:8443 --all-servers \
    || say "vless deploy failed (already deployed?)"
# HTTP and SOCKS5 on each user's own port (shoes, a container per user).
"$BIN/vpn" services deploy proxy --port 22000 --kind both --all-servers \
    || say "proxy deploy failed (already deployed?)"
"$BIN/vpn" services deploy wireguard --port 51820 --subnet 10.66.0.0/24 --all-servers \
    || say "wireguard deploy failed (already deployed?)"
"$BIN/vpn" users add demo --all-servers || say "users add failed (user exists?)"
wait_for 60 "$BIN/vpn" users link demo --protocol wireguard --server "${HOSTS[0]}" --conf \
    || die "no WireGuard .conf for demo on ${HOSTS[0]} within 60 s"
conf="$DEMO/demo-${HOSTS[0]}.conf"
(umask 077 && "$BIN/vpn" users link demo --protocol wireguard --server "${HOSTS[0]}" --conf >"$conf")
# URL links only: `-o plain` folds a WireGuard .conf onto one line; the .conf is shown below.
mapfile -t links < <("$BIN/vpn" users link demo -o plain | grep -E '^[a-z0-9]+://')
host1_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "vpn-demo-${HOSTS[0]}")"
first="${links[0]:-}"
proxy_link=""
for l in "${links[@]}"; do
    [[ "$l" == ss://* && "$l" == *"@$host1_ip:"* ]] && first="$l"
    [[ "$l" == socks5://* && "$l" == *"@$host1_ip:"* ]] && proxy_link="$l"
done

# --- self-check: the very link printed, through the real client, to host 1's page; the same
# page asked for as 127.0.0.1 must be refused (the server's ACL).
check="not run (sslocal or curl missing)"
loopback="not run"
if command -v sslocal >/dev/null && command -v curl >/dev/null && [[ -n "$first" ]]; then
    cport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    sslocal --server-url "$first" --local-addr "127.0.0.1:$cport" >"$DEMO/logs/selfcheck-sslocal.log" 2>&1 &
    spid=$!
    check="FAILED (see .demo/logs/)"
    for _ in $(seq 1 15); do
        if page="$(curl -sS --max-time 3 --socks5-hostname "127.0.0.1:$cport" "http://$host1_ip:8000/" 2>/dev/null)"; then
            check="OK: $page"
            break
        fi
        sleep 1
    done
    if [[ "$check" == OK* ]]; then
        if curl -sS --max-time 3 --socks5-hostname "127.0.0.1:$cport" http://127.0.0.1:8000/ >/dev/null 2>&1; then
            loopback="FAILED: the tunnel reached ${HOSTS[0]}'s 127.0.0.1"
        else
            loopback="OK: http://127.0.0.1:8000/ refused"
        fi
    fi
    kill "$spid" 2>/dev/null || true
fi

# --- the proxy: curl with the socks5:// link as printed.
proxy_check="not run (curl missing or no socks5:// link)"
if command -v curl >/dev/null && [[ -n "$proxy_link" ]]; then
    proxy_check="FAILED (see .demo/logs/agent-${HOSTS[0]}.log)"
    for _ in $(seq 1 15); do
        if page="$(curl -sS --max-time 3 --proxy "$proxy_link" "http://$host1_ip:8000/" 2>/dev/null)"; then
            proxy_check="OK: $page"
            break
        fi
        sleep 1
    done
fi

# --- WireGuard: a client namespace from host 1's .conf; the page must see a tunnel address.
wg_check="not run (wireguard-go or wg missing)"
wgns=""
if command -v wireguard-go >/dev/null && command -v wg >/dev/null && command -v curl >/dev/null; then
    wg_check="FAILED (see .demo/logs/wgclient.log and agent-${HOSTS[0]}.log)"
    if deploy/demo/wg-client.sh "$conf" >"$DEMO/logs/wgclient-setup.log" 2>&1; then
        wgns="$(deploy/demo/wg-client.sh --netns)"
        for _ in $(seq 1 15); do
            if page="$(nsenter --net="$wgns" -- curl -sS --max-time 3 "http://$host1_ip:8000/" 2>/dev/null)"; then
                seen="$(grep -o '^10\.66\.0\.[0-9]*' "$DEMO/logs/www.log" | tail -n1 || true)"
                if [[ -n "$seen" ]]; then
                    wg_check="OK: $page (${HOSTS[0]} saw the tunnel address $seen)"
                else
                    wg_check="FAILED: the page was fetched around the tunnel"
                fi
                break
            fi
            sleep 1
        done
    fi
fi

cat <<MSG

The demo fleet is up (state and logs in .demo/).
Self-check through the Shadowsocks tunnel: $check
Host loopback through the tunnel: $loopback
Self-check through the SOCKS5 proxy: $proxy_check
Self-check through the WireGuard tunnel: $wg_check

User "demo" has these links, one per host (and a WireGuard .conf per host, below):
$(printf '  %s\n' "${links[@]}")

Try the one of ${HOSTS[0]} ($host1_ip) with the real Shadowsocks client:
  sslocal --server-url '$first' --local-addr 127.0.0.1:1080 &
  curl --socks5-hostname 127.0.0.1:1080 http://$host1_ip:8000/
($host1_ip is ${HOSTS[0]}'s own address, dialled from the server's side. http://127.0.0.1:8000/ is
refused: the server does not relay to its host's loopback.)

The vless:// links are VLESS + Reality (XTLS Vision) served by the shoes engine, one container
per user; paste one into any VLESS Reality client (v2rayN, Hiddify, sing-box, shoes) on this
machine and open http://$host1_ip:8000/ through it. The e2e story tests/tests/fleet_vless.rs does
exactly that with the shoes client. See docs/VLESS.md.

The http:// and socks5:// links are the HTTP/SOCKS5 proxy (docs/PROXY.md); curl takes them as
printed:
  curl --proxy '$proxy_link' http://$host1_ip:8000/

WireGuard: demo's .conf for ${HOSTS[0]} (also in $conf, printed by
\`vpn users link demo --protocol wireguard --server ${HOSTS[0]} --conf\`; --qr for a QR code):
$(sed 's/^/  /' "$conf")
A client from it (wireguard-go + wg in a namespace of its own) is up; fetch through it:
  nsenter --net=${wgns:-\$(deploy/demo/wg-client.sh --netns)} -- curl http://$host1_ip:8000/
(${HOSTS[0]}'s web server logs the tunnel address, 10.66.0.x, as the client: .demo/logs/www.log.)
Bring it up again from any .conf with deploy/demo/wg-client.sh FILE, down with --down.

Drive the fleet with the CLI:
  export VPN_CONFIG=$VPN_CONFIG
  $BIN/vpn servers list                  # online / degraded (N failing) / offline
  $BIN/vpn doctor                        # fleet-wide checks (this kernel's missing tc features warn)
  $BIN/vpn users add alice --all-servers && $BIN/vpn users link alice
  $BIN/vpn tui                           # live overview: hosts, users (a to add, l for QR codes), events; ? for keys

Stop it all:
  deploy/demo/down.sh
MSG
