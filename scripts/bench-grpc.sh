#!/usr/bin/env bash
# gRPC against HTTP, measured in one run (issue 14):
#   - iris: the `iris` router of graphs/iris.yaml, one row, over gRPC (h2load, a pre-encoded
#     ModelInferRequest with raw contents), HTTP JSON and HTTP binary (wrk), with
#     examples/bare_axum.rs (HTTP JSON, fixed answer) as the same run's baseline;
#   - echo: a 1 MiB FP32 tensor through tests/graphs/echo.yaml (a noop transform), answered
#     the way it was sent: gRPC raw, HTTP JSON, HTTP binary.
# Placements: pinned (server on CPU 0, load generator on CPU 1, one client thread) and shared
# (nothing pinned, two client threads); concurrency 32 and 1 (32 connections with one request
# in flight each: `wrk -c32`, `h2load -c32 -m1`). Rounds alternate between the transports.
# Needs: wrk and h2load (apt: wrk nghttp2-client), curl, the test virtualenv
# (scripts/setup.sh --test) for the bodies. Environment: DURATION (seconds, default 8),
# ROUNDS (default 1), ONLY (subset of: pinned-32 shared-32 pinned-1 shared-1).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk h2load curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y wrk nghttp2-client curl" >&2; exit 1; }
done
PY="${SERVEGRAPH_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/servegraph/venv-test/bin/python}"
cargo build --release --locked --bin servegraph --example bare_axum 2>&1 | tail -n 1
T="${CARGO_TARGET_DIR:-target}/release"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-1}"
ONLY="${ONLY:-pinned-32 shared-32 pinned-1 shared-1}"
BODIES=$(mktemp -d)
"$PY" scripts/bench-bodies.py "$BODIES"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
trap 'cleanup; rm -rf "$BODIES"' EXIT
RPC=/inference.GRPCInferenceService/ModelInfer

# start CMD...: runs CMD (under $SERVER_CPU); sets ADDR (HTTP) and GRPC from its first line.
start() {
  local out; out=$(mktemp)
  RUST_LOG=warn "${SERVER_CPU[@]}" "$@" >"$out" &
  pids+=($!)
  ADDR=""; GRPC=""
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$out" | head -n1)
    GRPC=$(sed -n 's/.* grpc:\/\/\([^ ]*\).*/\1/p' "$out" | head -n1)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "server did not start: $*" >&2; exit 1; }
}

# The answer to one gRPC call must carry grpc-status 0 (h2load counts any HTTP 200).
grpc_ok() {
  local status
  status=$(curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary "@$2" -o /dev/null -v "http://$1$RPC" 2>&1 | tr -d '\r' | sed -n 's/^< grpc-status: //p' | head -n1)
  [ "$status" = "0" ] || { echo "gRPC call to $1 answered grpc-status '${status}'" >&2; exit 1; }
}

# wrk_run LABEL URL BODY [HEADER-LENGTH]: one "LABEL rps=... p50_us=..." line.
wrk_run() {
  local label=$1 url=$2 body=$3 len=${4:-}
  WRK_BODY=$body WRK_HEADER_LENGTH=$len "${CLIENT_CPU[@]}" wrk $WRK_ARGS -d 2s -s scripts/body.lua "$url" >/dev/null
  printf '%s %s\n' "$label" "$(WRK_BODY=$body WRK_HEADER_LENGTH=$len "${CLIENT_CPU[@]}" wrk $WRK_ARGS -d "${DURATION}s" -s scripts/body.lua "$url" | sed -n 's/^RESULT //p')"
}

# h2_run LABEL ADDR BODY [H2LOAD-ARGS]: one line in the same shape (mean latency: h2load
# gives no p50).
h2_run() {
  local label=$1 addr=$2 body=$3 args=${4:-$H2_ARGS} out
  out=$("${CLIENT_CPU[@]}" h2load $args -D "$DURATION" --warm-up-time=2 -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://$addr$RPC")
  local rps failed mean
  rps=$(echo "$out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
  failed=$(echo "$out" | sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p')
  mean=$(echo "$out" | awk '/^time for request:/ { print $6 }')
  printf '%s rps=%.0f mean=%s failed=%s\n' "$label" "$rps" "$mean" "$failed"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "${DURATION}s per round (after a 2 s warm-up), $ROUNDS rounds"
for config in $ONLY; do
  placement=${config%-*}; c=${config#*-}
  if [ "$placement" = pinned ]; then
    SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1); threads=1
  else
    SERVER_CPU=(); CLIENT_CPU=(); threads=$(( c > 1 ? 2 : 1 ))
  fi
  # h2load advertises what grpcio (tritonclient[grpc]) advertises: 4 MiB frames and a 4 MiB
  # stream window (its SETTINGS frame, read off the wire); h2load's own default is 16 KiB
  # frames.
  # `grpc`: c connections with one call each, as wrk's c connections; `grpc-mux`: one
  # connection carrying c calls at once, as one gRPC channel (one tritonclient client) does.
  WRK_ARGS="-t$threads -c$c"; H2_ARGS="-t $threads -c $c -m 1 -f 4M -w 22"
  MUX_ARGS="-t 1 -c 1 -m $c -f 4M -w 22"
  start "$T/examples/bare_axum" 127.0.0.1:0; bare=$ADDR
  start "$T/servegraph" serve graphs/iris.yaml --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0; iris=$ADDR; iris_grpc=$GRPC
  start "$T/servegraph" serve tests/graphs/echo.yaml --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --max-body-bytes 67108864; echo_http=$ADDR; echo_grpc=$GRPC
  until curl -sf "http://$iris/v2/health/ready" >/dev/null && curl -sf "http://$echo_http/v2/health/ready" >/dev/null; do sleep 0.1; done
  grpc_ok "$iris_grpc" "$BODIES/iris.grpc"; grpc_ok "$echo_grpc" "$BODIES/echo.grpc"
  out="/tmp/servegraph-bench-grpc-$config.txt"
  for _ in $(seq "$ROUNDS"); do
    wrk_run "$config iris bare-json" "http://$bare/v2/models/iris-lr/infer" "$BODIES/iris.json"
    wrk_run "$config iris http-json" "http://$iris/v2/models/iris/infer" "$BODIES/iris.json"
    wrk_run "$config iris http-binary" "http://$iris/v2/models/iris/infer" "$BODIES/iris.bin" "$(cat "$BODIES/iris.bin.len")"
    h2_run "$config iris grpc" "$iris_grpc" "$BODIES/iris.grpc"
    [ "$c" = 1 ] || h2_run "$config iris grpc-mux" "$iris_grpc" "$BODIES/iris.grpc" "$MUX_ARGS"
    wrk_run "$config echo http-json" "http://$echo_http/v2/models/echo/infer" "$BODIES/echo.json"
    wrk_run "$config echo http-binary" "http://$echo_http/v2/models/echo/infer" "$BODIES/echo.bin" "$(cat "$BODIES/echo.bin.len")"
    h2_run "$config echo grpc" "$echo_grpc" "$BODIES/echo.grpc"
    [ "$c" = 1 ] || h2_run "$config echo grpc-mux" "$echo_grpc" "$BODIES/echo.grpc" "$MUX_ARGS"
  done | tee "$out"
  awk -v config="$config" '{ split($4, rr, "="); k = $2 " " $3; rps[k] += rr[2]; n[k]++ }
       END { for (k in rps) r[k] = rps[k] / n[k];
             printf "%s: iris grpc %.0f req/s = %.1f%% of http-json (%.0f), %.1f%% of http-binary (%.0f), bare %.0f\n",
               config, r["iris grpc"], 100*r["iris grpc"]/r["iris http-json"], r["iris http-json"],
               100*r["iris grpc"]/r["iris http-binary"], r["iris http-binary"], r["iris bare-json"];
             printf "%s: echo 1 MiB grpc %.0f req/s = %.2fx http-json (%.0f), %.2fx http-binary (%.0f)\n",
               config, r["echo grpc"], r["echo grpc"]/r["echo http-json"], r["echo http-json"],
               r["echo grpc"]/r["echo http-binary"], r["echo http-binary"];
             if (("iris grpc-mux") in r)
               printf "%s: one channel: iris grpc-mux %.0f req/s = %.1f%% of http-json; echo grpc-mux %.0f req/s = %.2fx http-json, %.2fx http-binary\n",
                 config, r["iris grpc-mux"], 100*r["iris grpc-mux"]/r["iris http-json"],
                 r["echo grpc-mux"], r["echo grpc-mux"]/r["echo http-json"], r["echo grpc-mux"]/r["echo http-binary"] }' "$out"
  cleanup
done
