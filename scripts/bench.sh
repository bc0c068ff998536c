#!/usr/bin/env bash
# The foundation benchmarks, measured in one run:
#  1. HTTP: `servegraph serve graphs/iris.yaml` answering /v2/models/iris-lr/infer versus
#     examples/bare_axum.rs (same OIP decoder, fixed answer), at concurrency 1 and 32,
#     alternating rounds. Servers are pinned to CPU 0 and the load generator to CPU 1 when
#     `taskset` exists, so the two do not fight over cores.
#  2. Engine: per-step overhead of chains of noop transforms, in-process.
# Environment: DURATION (seconds per round, default 10), ROUNDS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked --bin servegraph --example bare_axum
T="${CARGO_TARGET_DIR:-target}/release"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1)
else
  SERVER_CPU=(); CLIENT_CPU=()
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME CMD...: runs CMD, waits for its "listening on http://ADDR" line, sets ADDR.
start() {
  local out; out=$(mktemp)
  RUST_LOG=warn "${SERVER_CPU[@]}" "$@" >"$out" &
  pids+=($!)
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*listening on http:\/\/\(.*\)/\1/p' "$out" | head -n1)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "server did not start: $*" >&2; exit 1; }
}

start "$T/servegraph" serve graphs/iris.yaml --listen 127.0.0.1:0; SG=$ADDR
start "$T/examples/bare_axum" 127.0.0.1:0; BARE=$ADDR
until curl -sf "http://$SG/v2/health/ready" >/dev/null; do sleep 0.1; done

REQ='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "servers pinned: ${SERVER_CPU[*]:-no}; load generator: ${CLIENT_CPU[*]:-no}; ${DURATION}s per round"
for c in 1 32; do
  for r in $(seq "$ROUNDS"); do
    for target in bare servegraph; do
      if [ $target = bare ]; then addr=$BARE; else addr=$SG; fi
      "${CLIENT_CPU[@]}" "$T/servegraph" bench http --url "http://$addr/v2/models/iris-lr/infer" \
        --data "$REQ" --concurrency "$c" --duration "$DURATION" --warmup 2 --label "$target"
    done
  done
done | tee /tmp/servegraph-bench-http.txt
awk '/req\/s/ { split($1, a, ":"); name=a[1]; c=$3; sub(":", "", c); rps[name" "c]+=$4; n[name" "c]++ }
     END { split("1 32", cs, " ");
           for (i in cs) { k=cs[i]; b=rps["bare "k]/n["bare "k]; s=rps["servegraph "k]/n["servegraph "k];
             printf "concurrency %s: servegraph %.0f req/s, bare axum %.0f req/s, ratio %.1f%%\n", k, s, b, 100*s/b } }' \
  /tmp/servegraph-bench-http.txt

"$T/servegraph" bench engine
