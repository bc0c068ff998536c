#!/usr/bin/env bash
# Instructions per request, counted (valgrind --tool=callgrind): a figure other load on the
# machine does not move (docs/benchmarks.md, "Instructions per request"; issue 27).
#
#   scripts/bench-instructions.sh            release build: bare axum and servegraph (iris-lr,
#                                            the router), c=1 and c=32; the per-layer table
#   scripts/bench-instructions.sh --check    also fail when servegraph's own instructions per
#                                            request exceed scripts/instructions.json's by > 10%
#
# Each server starts under callgrind with instrumentation off, answers WARMUP requests (the
# ONNX model's inline warm-up included: SERVEGRAPH_INLINE_TIME_SCALE makes its CPU-time
# thresholds fit a program running ~50x slower), then is instrumented for REQUESTS requests
# only, dumped and stopped. "Own" is every user-space instruction but the calls into ONNX
# Runtime (scripts/callgrind-layers.py); the kernel's share is not counted (see bench-cpu.sh).
#
# Environment: SERVEGRAPH_BIN / BARE_BIN (default: this tree's release build, built first),
# PROFILE (the key in scripts/instructions.json: release, or debug for a debug build),
# REQUESTS (default 2000), WARMUP (default 400), CASES (default "bare:iris-lr:1 sg:iris-lr:1
# sg:iris:1 grpc:iris-lr:1 bare:iris-lr:32 sg:iris-lr:32 sg:iris:32 grpc:iris-lr:32"; `grpc`
# is servegraph answering the same request as a gRPC ModelInfer call, through the test
# virtualenv's grpcio: SERVEGRAPH_PYTHON), OUT (a folder to keep the profiles in).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
if [ -z "${SERVEGRAPH_BIN:-}" ]; then
  cargo build --release --locked --bin servegraph --example bare_axum 2>&1 | tail -n 1
  T="${CARGO_TARGET_DIR:-target}/release"
  SERVEGRAPH_BIN="$T/servegraph"
  BARE_BIN="${BARE_BIN:-$T/examples/bare_axum}"
fi
PROFILE="${PROFILE:-release}"
REQUESTS="${REQUESTS:-2000}"
WARMUP="${WARMUP:-400}"
CASES="${CASES:-bare:iris-lr:1 sg:iris-lr:1 sg:iris:1 grpc:iris-lr:1 bare:iris-lr:32 sg:iris-lr:32 sg:iris:32 grpc:iris-lr:32}"
PY="${SERVEGRAPH_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/servegraph/venv-test/bin/python}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# measure KIND MODEL CONNECTIONS: prints "KIND:MODEL:C total own model" per request.
measure() {
  local kind=$1 model=$2 conns=$3 port; port=$(free_port)
  local name="$kind-$model-c$conns"
  local cmd=("$SERVEGRAPH_BIN" serve graphs/iris.yaml --listen "127.0.0.1:$port")
  [ "$kind" = bare ] && cmd=("${BARE_BIN:?BARE_BIN is needed for the bare case}" "127.0.0.1:$port")
  local client=(python3 scripts/instr-client.py "127.0.0.1:$port" "/v2/models/$model/infer")
  if [ "$kind" = grpc ]; then
    local gport; gport=$(free_port)
    cmd+=(--grpc-listen "127.0.0.1:$gport")
    client=("$PY" scripts/instr-client.py --grpc "127.0.0.1:$gport" "$model")
  fi
  # One async worker thread: the same path every run (no work stealing between two).
  SERVEGRAPH_INLINE_TIME_SCALE=100 TOKIO_WORKER_THREADS=1 RUST_LOG=warn \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$name.%p" \
    "${cmd[@]}" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    if [ "$kind" = bare ]; then
      curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    else
      curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/$name.log" >&2; exit 1; }
    sleep 0.2
  done
  "${client[@]}" "$WARMUP" "$conns"
  callgrind_control -i on "$pid" >/dev/null
  "${client[@]}" "$REQUESTS" "$conns"
  callgrind_control -d "$name" "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file; file=$(ls -t "$OUT/$name".*.* 2>/dev/null | head -n 1)
  python3 scripts/callgrind-layers.py "$file" "$REQUESTS" >"$OUT/$name.md"
  python3 scripts/callgrind-layers.py "$file" "$REQUESTS" --json >"$OUT/$name.json"
  python3 - "$OUT/$name.json" "$kind:$model:$conns" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} total={d['total_per_request']:.0f} own={d['own_per_request']:.0f} model={d['model_run_per_request']:.0f}")
PY
}

results="$OUT/results.txt"
: >"$results"
for case in $CASES; do
  IFS=: read -r kind model conns <<<"$case"
  measure "$kind" "$model" "$conns" | tee -a "$results"
done
for case in $CASES; do
  IFS=: read -r kind model conns <<<"$case"
  [ "$kind" = bare ] && continue
  if [ "$kind" = grpc ]; then
    echo; echo "### servegraph, gRPC ModelInfer to $model, c=$conns ($PROFILE build)"; echo
  else
    echo; echo "### servegraph, /v2/models/$model/infer, c=$conns ($PROFILE build)"; echo
  fi
  cat "$OUT/$kind-$model-c$conns.md"
done
echo; echo "profiles and tables in $OUT"

if [ "$CHECK" = 1 ]; then
  python3 - "$results" scripts/instructions.json "$PROFILE" <<'PY'
import json, sys
results, baseline, profile = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
committed = baseline.get(profile, {})
failed = False
for line in open(results):
    key, *fields = line.split()
    if key.startswith("bare:"):
        continue
    own = float(dict(f.split("=") for f in fields)["own"])
    if key not in committed:
        print(f"check: {key}: {own:.0f} own instructions per request; none committed for {profile}")
        continue
    limit = committed[key] * 1.10
    verdict = "ok" if own <= limit else "FAILED"
    failed |= own > limit
    print(f"check: {key}: {own:.0f} own instructions per request, committed {committed[key]:.0f} "
          f"(limit {limit:.0f}, {100 * (own / committed[key] - 1):+.1f}%): {verdict}")
sys.exit(1 if failed else 0)
PY
fi
