#!/usr/bin/env bash
# Fleet benchmarks of SPEC §3, release build, loopback, with simulated agents (vpn-agent-sim,
# real protocol, real enrolled identities) or real agent processes, and the real `vpn` CLI.
#
#   deploy/bench/fleet.sh adds AGENTS [real]  # `vpn users add uK --all-servers`, 40 adds timed
#                                             # from the shell: p50/p90/p99; and the Ansible
#                                             # anchor (one-task playbook, same host count,
#                                             # local connection) in the same run
#   deploy/bench/fleet.sh hold AGENTS         # AGENTS connected for 60 s: controller RSS, CPU
#                                             # (USERS=N: N users on every host first)
#   USERS=N deploy/bench/fleet.sh deploy AGENTS # `vpn services deploy shadowsocks --all-servers`
#                                             # to AGENTS hosts of N users each, all acked
#   deploy/bench/fleet.sh restart AGENTS      # controller killed and started again: time until
#                                             # every agent is back, peak handshake rate
#
# Prints figures; asserts nothing about speed. Everything it starts lives under $WORK
# (default /tmp/vpn-fleet-bench) and is stopped on exit. `real` runs AGENTS real `vpn-agent`
# processes (no services, --no-firewall --no-shaping) instead of simulated ones.
set -euo pipefail

MODE="${1:?usage: fleet.sh adds|hold|deploy|restart AGENTS [real]}"
AGENTS="${2:?usage: fleet.sh adds|hold|deploy|restart AGENTS [real]}"
KIND="${3:-sim}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${WORK:-/tmp/vpn-fleet-bench}"
PORT="${PORT:-47443}"
ADDS="${ADDS:-40}"
USERS="${USERS:-0}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release"
export VPN_CONFIG="$WORK/vpn.toml"

say() { echo "fleet-bench: $*"; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

say "building release binaries"
(cd "$ROOT" && cargo build --release -q -p vpn-controller -p vpn-cli -p vpn-agent -p vpn-agent-sim --bins)

rm -rf "$WORK"
mkdir -p "$WORK"
"$BIN/vpn-controller" init --data-dir "$WORK/ctl" --listen "127.0.0.1:$PORT" \
    --public-address "127.0.0.1:$PORT" >/dev/null
[[ -f "$VPN_CONFIG" ]] || { echo "no CLI context at $VPN_CONFIG" >&2; exit 1; }

CTL_PID=""
start_controller() {
    "$BIN/vpn-controller" run --data-dir "$WORK/ctl" >>"$WORK/controller.log" 2>&1 &
    CTL_PID=$!
    pids+=("$CTL_PID")
    for _ in $(seq 1 100); do
        "$BIN/vpn" servers list -o json >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "controller did not answer; see $WORK/controller.log" >&2
    exit 1
}

# Online hosts, as the controller sees them.
online() {
    "$BIN/vpn" servers list -o json | python3 -c \
        'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["server"]["online"]))'
}

wait_online() {
    local want="$1" limit="$2" n=0
    for _ in $(seq 1 "$limit"); do
        n="$(online)"
        [[ "$n" -ge "$want" ]] && return 0
        sleep 1
    done
    echo "only $n of $want hosts online after ${limit}s" >&2
    exit 1
}

start_controller
if [[ "$USERS" -gt 0 ]]; then
    say "adding $USERS users on every host (before the hosts connect)"
    for i in $(seq 1 "$USERS"); do
        "$BIN/vpn" users add "held-$i" --all-servers --no-wait -o json >/dev/null
    done
fi
if [[ "$KIND" == real ]]; then
    say "adding and starting $AGENTS real agents (no services, no firewall, no shaping)"
    for i in $(seq -w 1 "$AGENTS"); do
        join="$("$BIN/vpn" servers add "real-$i" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["join"])')"
        "$BIN/vpn-agent" join "$join" --data-dir "$WORK/agent-$i" >/dev/null 2>&1
        "$BIN/vpn-agent" run --data-dir "$WORK/agent-$i" --no-firewall --no-shaping \
            >"$WORK/agent-$i.log" 2>&1 &
        pids+=("$!")
    done
else
    say "enrolling $AGENTS simulated agents"
    "$BIN/vpn-agent-sim" enroll --count "$AGENTS" --out "$WORK/sim.json"
    "$BIN/vpn-agent-sim" run --identities "$WORK/sim.json" --stats-every 1s \
        --start-spread "$((AGENTS / 500 + 1))s" >"$WORK/sim.log" 2>&1 &
    SIM_PID=$!
    pids+=("$SIM_PID")
fi
started=$(date +%s.%N)
wait_online "$AGENTS" 180
say "$AGENTS agents online in $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s"

percentiles() {
    python3 -c '
import sys
xs = sorted(float(x) for x in sys.stdin.read().split())
at = lambda p: xs[min(len(xs) - 1, round((len(xs) - 1) * p))]
print(f"n={len(xs)} p50={at(0.5):.1f} ms p90={at(0.9):.1f} ms p99={at(0.99):.1f} ms max={xs[-1]:.1f} ms")'
}

case "$MODE" in
adds)
    say "$ADDS x \`vpn users add uK --all-servers\` (each waits for every online host's ack)"
    : >"$WORK/adds.ms"
    for k in $(seq 1 "$ADDS"); do
        t0=$(date +%s%N)
        out="$("$BIN/vpn" users add "bench-$k" --all-servers -o json)"
        t1=$(date +%s%N)
        applied="$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for h in d["hosts"] if str(h["state"]).lower()=="applied"))' <<<"$out")"
        [[ "$applied" == "$AGENTS" ]] || { echo "add $k: only $applied of $AGENTS hosts applied" >&2; exit 1; }
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e6 }' >>"$WORK/adds.ms"
    done
    say "users add --all-servers at $AGENTS $KIND agents: $(percentiles <"$WORK/adds.ms")"
    say "controller RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"$CTL_PID"/status)"

    # The anchor: the same change pushed by Ansible, one task over as many hosts.
    if ! command -v ansible-playbook >/dev/null; then
        say "installing ansible-core from PyPI for the anchor"
        python3 -m pip install --quiet ansible-core
    fi
    mkdir -p "$WORK/ansible/out"
    { echo "[fleet]"; for i in $(seq -w 1 "$AGENTS"); do echo "h$i ansible_connection=local ansible_python_interpreter=$(command -v python3)"; done; } \
        >"$WORK/ansible/hosts"
    cat >"$WORK/ansible/play.yml" <<EOF
- hosts: fleet
  gather_facts: false
  tasks:
    - name: add the user
      ansible.builtin.copy:
        content: "alice\n"
        dest: "$WORK/ansible/out/{{ inventory_hostname }}"
EOF
    t0=$(date +%s%N)
    ANSIBLE_HOST_KEY_CHECKING=False ansible-playbook -i "$WORK/ansible/hosts" --forks 20 \
        "$WORK/ansible/play.yml" >"$WORK/ansible.log" 2>&1
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    p50="$(percentiles <"$WORK/adds.ms" | sed -E 's/.*p50=([0-9.]+).*/\1/')"
    say "anchor: ansible-playbook, one task over $AGENTS local hosts, --forks 20: ${ms} ms; users add p50 is $(python3 -c "print(f'{$ms / $p50:.0f}')")x faster"
    ;;
hold)
    say "holding $AGENTS agents for 60 s"
    read_cpu() { awk '{print $14 + $15}' /proc/"$CTL_PID"/stat; }
    c0=$(read_cpu); t0=$(date +%s.%N)
    sleep 60
    c1=$(read_cpu); t1=$(date +%s.%N)
    tck=$(getconf CLK_TCK)
    say "controller with $AGENTS agents of $USERS users each: RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"$CTL_PID"/status) (peak $(awk '/VmHWM/ {print $2, $3}' /proc/"$CTL_PID"/status)), CPU $(python3 -c "print(f'{($c1 - $c0) / $tck / ($t1 - $t0) * 100:.1f}')") % of one core over 60 s; still online: $(online)"
    ;;
deploy)
    say "\`vpn services deploy shadowsocks --all-servers\` to $AGENTS hosts of $USERS users each"
    t0=$(date +%s%N)
    out="$("$BIN/vpn" services deploy shadowsocks --port 20000 --ports "$((USERS + 1))" \
        --all-servers -o json)"
    t1=$(date +%s%N)
    applied="$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for h in d["hosts"] if str(h["state"]).lower()=="applied"))' <<<"$out")"
    say "deploy to $AGENTS hosts x $USERS users: $(( (t1 - t0) / 1000000 )) ms, $applied of $AGENTS hosts applied; controller RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"$CTL_PID"/status) (peak $(awk '/VmHWM/ {print $2, $3}' /proc/"$CTL_PID"/status))"
    ;;
restart)
    say "killing the controller (SIGKILL) with $AGENTS agents connected, starting it again"
    kill -9 "$CTL_PID"
    wait "$CTL_PID" 2>/dev/null || true
    before_dials=$(tail -n 1 "$WORK/sim.log" | sed -E 's/.* dials=([0-9]+).*/\1/')
    t0=$(date +%s.%N)
    start_controller
    wait_online "$AGENTS" 300
    t1=$(date +%s.%N)
    sleep 2
    say "all $AGENTS back $(python3 -c "print(f'{$t1 - $t0:.1f}')") s after the controller started again"
    # Peak handshake rate: the simulator's dial counter, per second, since the kill.
    python3 - "$WORK/sim.log" "$before_dials" <<'EOF'
import re, sys
rows = [(float(m.group(1)), int(m.group(2))) for line in open(sys.argv[1])
        if (m := re.match(r"t=([0-9.]+)s .* dials=([0-9]+)", line))]
base = int(sys.argv[2])
rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(rows, rows[1:]) if b[1] > base and b[0] > a[0]]
print(f"fleet-bench: peak dial rate {max(rates):.0f}/s, mean over the reconnect {sum(rates)/len(rates):.0f}/s; total redials {rows[-1][1] - base}")
EOF
    ;;
*)
    echo "unknown mode $MODE" >&2
    exit 2
    ;;
esac
