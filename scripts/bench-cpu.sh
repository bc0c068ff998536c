#!/usr/bin/env bash
# Server CPU time per request, side by side: a figure that other load on the machine moves
# far less than req/s (this VM has no hardware counters for instructions). Each server runs
# pinned to CPU 0 and wrk (`-t1 -c32`, CPU 1) posts the single-row iris body for DURATION
# seconds; the server's user + system CPU time over the round (/proc/PID/stat) divided by the
# requests answered is its cost per request. Bare axum (examples/bare_axum.rs) runs in the
# same rounds; servegraph binaries serve graphs/iris.yaml (iris-lr, and the 50/50 router).
# Usage: scripts/bench-cpu.sh [NAME=SERVEGRAPH_BINARY ...]   (default: this tree's release
# build as `head`). Environment: DURATION (default 5), ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --locked --bin servegraph --example bare_axum 2>&1 | tail -n 1
T="${CARGO_TARGET_DIR:-target}/release"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
[ $# -gt 0 ] || set -- "head=$T/servegraph"
LUA="$PWD/scripts/body.lua"
TICK=$(getconf CLK_TCK)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# start NAME CMD...: CMD on CPU 0; sets PID_<NAME> and ADDR_<NAME> once it listens.
start() {
  local name=$1; shift
  local out; out=$(mktemp)
  RUST_LOG=warn taskset -c 0 "$@" >"$out" &
  pids+=($!); printf -v "PID_$name" '%s' "$!"
  local addr=""
  for _ in $(seq 200); do
    addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$out" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "$name did not start" >&2; exit 1; }
  printf -v "ADDR_$name" '%s' "$addr"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# round LABEL NAME PATH: one wrk round; prints LABEL req/s and CPU µs per request.
round() {
  local label=$1 name=$2 path=$3
  local pid_var="PID_$name" addr_var="ADDR_$name"
  local pid=${!pid_var} addr=${!addr_var}
  taskset -c 1 wrk -t1 -c32 -d 1s -s "$LUA" "http://$addr$path" >/dev/null
  local before; before=$(cpu_ticks "$pid")
  local result; result=$(taskset -c 1 wrk -t1 -c32 -d "${DURATION}s" -s "$LUA" "http://$addr$path" | sed -n 's/^RESULT //p')
  local after; after=$(cpu_ticks "$pid")
  local rps; rps=$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$result")
  awk -v l="$label" -v r="$rps" -v t=$((after - before)) -v hz="$TICK" -v d="$DURATION" \
    'BEGIN { printf "%s rps=%d cpu_us_per_req=%.2f\n", l, r, t / hz * 1e6 / (r * d) }'
}

start bare "$T/examples/bare_axum" 127.0.0.1:0
names=()
for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}
  names+=("$name")
  start "$name" "$bin" serve graphs/iris.yaml --listen 127.0.0.1:0
  addr_var="ADDR_$name"
  until curl -sf "http://${!addr_var}/v2/health/ready" >/dev/null; do sleep 0.1; done
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${DURATION}s rounds, $ROUNDS rounds"
out=$(mktemp)
for _ in $(seq "$ROUNDS"); do
  round bare bare /v2/models/iris-lr/infer
  for name in "${names[@]}"; do
    round "$name:iris-lr" "$name" /v2/models/iris-lr/infer
    round "$name:router" "$name" /v2/models/iris/infer
  done
done | tee "$out"
echo "means:"
awk '{ split($2, r, "="); split($3, c, "="); rps[$1] += r[2]; cpu[$1] += c[2]; n[$1]++; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
     END { b = rps["bare"] / n["bare"];
           for (i = 1; i <= k; i++) { l = order[i];
             printf "  %-16s %8.0f req/s (%5.1f%% of bare)  %6.2f CPU-us per request\n", l, rps[l]/n[l], 100 * rps[l] / n[l] / b, cpu[l]/n[l] } }' "$out"
