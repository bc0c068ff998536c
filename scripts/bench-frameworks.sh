#!/usr/bin/env bash
# Clipper's framework deployers against their model called in-process (docs/benchmarks.md,
# issue 29): a small PyTorch MLP and the same in Keras, deployed live (scripts/bench_frameworks.py,
# in the framework's virtualenv from `scripts/setup.sh --test`, the model's worker running that
# interpreter with threads=1), then `servegraph bench http` on the one-row OIP body:
#  - c=1: p50, against `func(model, [row])` p50 in-process (the difference: servegraph's
#    overhead per call: HTTP, the queue, the worker's pipe, the closure's list conversion);
#  - c=32: req/s without batching, with `batch_size=32`, and (torch) with `onnx=True`
#    (ONNX Runtime in the server, no Python).
# Environment: DURATION (seconds per run, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/servegraph"
for fw in torch tf; do
  [ -x "$CACHE/venv-$fw/bin/python" ] || { echo "$CACHE/venv-$fw is missing: run scripts/setup.sh --test" >&2; exit 1; }
done
cargo build --release --locked --bin servegraph 2>&1 | tail -n 1
BIN="${CARGO_TARGET_DIR:-target}/release/servegraph"
DURATION="${DURATION:-10}"
WORK=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$WORK"' EXIT
cp models/iris_lr.onnx "$WORK/"
printf 'name: bench-frameworks\ngraph:\n  kind: router\n  routes:\n    iris-lr: {kind: model, class: onnx, model_path: iris_lr.onnx}\n' > "$WORK/g.yaml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$BIN" serve "$WORK/g.yaml" --listen "127.0.0.1:$port" --admin-token bench >"$WORK/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2; done
for fw in torch tf; do
  TF_CPP_MIN_LOG_LEVEL=2 "$CACHE/venv-$fw/bin/python" scripts/bench_frameworks.py "$fw" "127.0.0.1:$port" bench "$PWD" "$WORK" 2>/dev/null
  models="$fw $fw-batch"
  [ "$fw" = torch ] && models="$models torch-onnx"
  for m in $models; do
    for c in 1 32; do
      [ "$c" = 1 ] && [ "$m" != "$fw" ] && [ "$m" != torch-onnx ] && continue
      "$BIN" bench http --url "http://127.0.0.1:$port/v2/models/$m/infer" --data "@$WORK/body.json" \
        --concurrency "$c" --duration "$DURATION" --warmup 2 --label "$m c=$c"
    done
  done
done
