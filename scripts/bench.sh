#!/usr/bin/env bash
# The HTTP and engine benchmarks, measured in one run with wrk (apt: wrk):
#  1. HTTP, single-row iris body, against examples/bare_axum.rs (same OIP decoder, fixed
#     answer) in the same run, alternating rounds:
#       - `iris-lr`: /v2/models/iris-lr/infer on graphs/iris.yaml as shipped;
#       - `router`:  /v2/models/iris/infer, the graph's 50/50 weighted router;
#       - `cb-router`: the same router with a contextual policy (SquareCB over the input's 4
#         numbers and an intercept; no feedback, so it spreads requests as it starts), from a
#         second server;
#     pinned (server on CPU 0, wrk on CPU 1, `wrk -t1 -c32`) and shared (nothing pinned,
#     `wrk -t2 -c32`); c=1 latency (`wrk -t1 -c1`, p50); and many connections (shared,
#     `wrk -t2 -c1024`).
#  2. Tracking to Kafka: graphs/iris.yaml's iris-lr, without tracking and with every request
#     tracked to a local broker (scripts/kafka.sh), alternating rounds, shared (`wrk -t2 -c32`).
#  3. Engine: per-step overhead of chains of noop transforms, in-process.
# Environment: DURATION (seconds per round, default 10), ROUNDS (default 2), ONLY (a space-
# separated subset of: pinned shared c1 c1024 tracking engine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --locked --bin servegraph --example bare_axum 2>&1 | tail -n 1
T="${CARGO_TARGET_DIR:-target}/release"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"
ONLY="${ONLY:-pinned shared c1 c1024 tracking engine}"
ulimit -n 65536 2>/dev/null || true
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
BROKER_STARTED=""
stop_broker() { [ -z "$BROKER_STARTED" ] || scripts/kafka.sh stop; BROKER_STARTED=""; }
trap 'cleanup; stop_broker; rm -rf "${TRACKED:-}"' EXIT
want() { [[ " $ONLY " == *" $1 "* ]]; }

# start CMD...: runs CMD (under $SERVER_CPU), waits for "listening on http://ADDR", sets ADDR.
start() {
  local out; out=$(mktemp)
  RUST_LOG=warn "${SERVER_CPU[@]}" "$@" >"$out" &
  pids+=($!)
  ADDR=""
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*listening on http:\/\/\(.*\)/\1/p' "$out" | head -n1)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "server did not start: $*" >&2; exit 1; }
}

LUA="$PWD/scripts/body.lua"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "${DURATION}s per round (after a 2 s warm-up), $ROUNDS rounds, alternating bare/iris-lr/router"

# run LABEL ADDR PATH WRK-ARGS...: one wrk round, one "LABEL rps=... p50_us=..." line.
run() {
  local label=$1 addr=$2 path=$3; shift 3
  "${CLIENT_CPU[@]}" wrk "$@" -d 2s -s "$LUA" "http://$addr$path" >/dev/null
  printf '%s %s\n' "$label" "$("${CLIENT_CPU[@]}" wrk "$@" -d "${DURATION}s" -s "$LUA" "http://$addr$path" | sed -n 's/^RESULT //p')"
}

# The iris graph with its router's policy contextual (absolute model paths: it is written
# elsewhere).
CB_DIR=$(mktemp -d)
python3 - "$PWD" "$CB_DIR/iris-cb.yaml" <<'PY'
import sys
root, out = sys.argv[1], sys.argv[2]
text = open(f"{root}/graphs/iris.yaml").read().replace("../models/", f"{root}/models/")
weighted = "  policy:\n    type: weighted\n    weights: {iris-lr: 50, iris-rf: 50}\n"
assert weighted in text, "graphs/iris.yaml's policy changed: update scripts/bench.sh"
text = text.replace(weighted, "  policy: {type: squarecb, seed: 1, features: [{tensor: input, size: 4}]}\n")
open(out, "w").write(text)
PY
trap 'cleanup; stop_broker; rm -rf "${TRACKED:-}" "$CB_DIR"' EXIT

# bench CONFIG WRK-ARGS...: bare, iris-lr, router and cb-router, alternating, then the ratios.
bench() {
  local config=$1; shift
  start "$T/examples/bare_axum" 127.0.0.1:0; local bare=$ADDR
  start "$T/servegraph" serve graphs/iris.yaml --listen 127.0.0.1:0; local sg=$ADDR
  start "$T/servegraph" serve "$CB_DIR/iris-cb.yaml" --model-root "$PWD" --listen 127.0.0.1:0; local cb=$ADDR
  until curl -sf "http://$sg/v2/health/ready" >/dev/null && curl -sf "http://$cb/v2/health/ready" >/dev/null; do sleep 0.1; done
  local out="/tmp/servegraph-bench-$config.txt"
  for _ in $(seq "$ROUNDS"); do
    run "$config bare" "$bare" /v2/models/iris-lr/infer "$@"
    run "$config iris-lr" "$sg" /v2/models/iris-lr/infer "$@"
    run "$config router" "$sg" /v2/models/iris/infer "$@"
    run "$config cb-router" "$cb" /v2/models/iris/infer "$@"
  done | tee "$out"
  awk -v config="$config" '{ split($3, rr, "="); split($4, pp, "="); rps[$2] += rr[2]; p50[$2] += pp[2]; n[$2]++ }
       END { b = rps["bare"]/n["bare"]; l = rps["iris-lr"]/n["iris-lr"]; x = rps["router"]/n["router"]; c = rps["cb-router"]/n["cb-router"];
             bp = p50["bare"]/n["bare"]; lp = p50["iris-lr"]/n["iris-lr"]; xp = p50["router"]/n["router"]; cp = p50["cb-router"]/n["cb-router"];
             printf "%s: bare %.0f req/s (p50 %d us); iris-lr %.0f (%.1f%%, p50 %.2fx); router %.0f (%.1f%%, p50 %.2fx); cb-router %.0f (%.1f%%, p50 %.2fx; %.1f%% of router)\n",
               config, b, bp, l, 100*l/b, lp/bp, x, 100*x/b, xp/bp, c, 100*c/b, cp/bp, 100*c/x }' "$out"
  cleanup
}

if want pinned && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1)
  bench pinned -t1 -c32
fi
SERVER_CPU=(); CLIENT_CPU=()
if want shared; then bench shared -t2 -c32; fi
if want c1; then bench c1 -t1 -c1; fi
if want c1024; then bench c1024 -t2 -c1024 --timeout 10s; fi
# tracking: iris-lr without tracking and with `tracking: {sink: kafka://…, sample: 1}`, both
# up, alternating rounds (shared cores, as a pod with a broker elsewhere would not be).
if want tracking; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  broker=$(scripts/kafka.sh start "$port"); BROKER_STARTED=1
  TRACKED=$(mktemp -d)
  mkdir -p "$TRACKED/graphs"
  sed "s|\.\./models/|$PWD/models/|" graphs/iris.yaml >"$TRACKED/graphs/iris.yaml"
  { cat "$TRACKED/graphs/iris.yaml"; printf 'tracking:\n  sink: "kafka://%s/bench-events"\n  sample: 1\n' "$broker"; } \
    >"$TRACKED/graphs/iris-tracked.yaml"
  start "$T/servegraph" serve "$TRACKED/graphs/iris.yaml" --model-root "$PWD" --listen 127.0.0.1:0; plain=$ADDR
  start "$T/servegraph" serve "$TRACKED/graphs/iris-tracked.yaml" --model-root "$PWD" --listen 127.0.0.1:0; tracked=$ADDR
  until curl -sf "http://$plain/v2/health/ready" >/dev/null && curl -sf "http://$tracked/v2/health/ready" >/dev/null; do sleep 0.1; done
  out=/tmp/servegraph-bench-tracking.txt
  for _ in $(seq "$ROUNDS"); do
    run "tracking off" "$plain" /v2/models/iris-lr/infer -t2 -c32
    run "tracking kafka" "$tracked" /v2/models/iris-lr/infer -t2 -c32
  done | tee "$out"
  dropped=$(curl -s "http://$tracked/metrics" | awk '/^servegraph_tracking_events_dropped_total/ { s += $2 } END { print s + 0 }')
  awk -v dropped="$dropped" '{ split($3, rr, "="); rps[$2] += rr[2]; n[$2]++ }
       END { o = rps["off"]/n["off"]; k = rps["kafka"]/n["kafka"];
             printf "tracking: off %.0f req/s; kafka %.0f req/s (%.1f%% slower); events dropped %d\n",
               o, k, 100*(o-k)/o, dropped }' "$out"
  cleanup; stop_broker
fi
if want engine; then "$T/servegraph" bench engine; fi
