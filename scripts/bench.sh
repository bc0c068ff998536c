#!/usr/bin/env bash
# The foundation benchmarks, measured in one run:
#  1. HTTP: /v2/models/iris-lr/infer served by `servegraph serve graphs/iris.yaml` as shipped
#     (opportunistic batching on), by the same graph without `batch`, and by
#     examples/bare_axum.rs (same OIP decoder, fixed answer); concurrency 1 and 32,
#     alternating rounds; twice: servers pinned to CPU 0 and the load generator to CPU 1
#     ("pinned", when taskset exists), and nothing pinned ("shared").
#  2. Engine: per-step overhead of chains of noop transforms, in-process.
# Environment: DURATION (seconds per round, default 10), ROUNDS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked --bin servegraph --example bare_axum
T="${CARGO_TARGET_DIR:-target}/release"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT

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

# The shipped graph without `batch`, models resolved from the repository.
NOBATCH=$(mktemp --suffix=.yaml)
sed -e '/batch: {/d' -e "s|\.\./models/|$PWD/models/|" graphs/iris.yaml > "$NOBATCH"

REQ='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "${DURATION}s per round (after 2s warm-up), $ROUNDS rounds, alternating bare/servegraph"

# pinned: both servers on CPU 0, the load generator on CPU 1 (the strict case: the server has
# one core). shared: no pinning; servers and load generator share every core.
configs=(shared)
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then configs=(pinned shared); fi
for config in "${configs[@]}"; do
  if [ "$config" = pinned ]; then SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1); else SERVER_CPU=(); CLIENT_CPU=(); fi
  start "$T/servegraph" serve graphs/iris.yaml --listen 127.0.0.1:0; SG=$ADDR
  start "$T/servegraph" serve "$NOBATCH" --listen 127.0.0.1:0; SG_NOBATCH=$ADDR
  start "$T/examples/bare_axum" 127.0.0.1:0; BARE=$ADDR
  for a in $SG $SG_NOBATCH; do until curl -sf "http://$a/v2/health/ready" >/dev/null; do sleep 0.1; done; done
  out="/tmp/servegraph-bench-http-$config.txt"
  for c in 1 32; do
    for r in $(seq "$ROUNDS"); do
      for target in bare servegraph servegraph-nobatch; do
        case $target in bare) addr=$BARE ;; servegraph) addr=$SG ;; *) addr=$SG_NOBATCH ;; esac
        "${CLIENT_CPU[@]}" "$T/servegraph" bench http --url "http://$addr/v2/models/iris-lr/infer" \
          --data "$REQ" --concurrency "$c" --duration "$DURATION" --warmup 2 --label "$config $target"
      done
    done
  done | tee "$out"
  awk -v config="$config" '/req\/s/ { name=$2; sub(":", "", name); c=$4; sub(":", "", c); rps[name" "c]+=$5; n[name" "c]++ }
       END { split("1 32", cs, " ");
             for (i = 1; i <= 2; i++) { k=cs[i]; b=rps["bare "k]/n["bare "k]; s=rps["servegraph "k]/n["servegraph "k];
               u=rps["servegraph-nobatch "k]/n["servegraph-nobatch "k];
               printf "%s, concurrency %s: bare axum %.0f req/s; servegraph %.0f (%.1f%%); without batch %.0f (%.1f%%)\n", config, k, b, s, 100*s/b, u, 100*u/b } }' "$out"
  cleanup
done

"$T/servegraph" bench engine
