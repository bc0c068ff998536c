#!/usr/bin/env bash
# Python models against MLServer, in one run (docs/benchmarks.md, issue 11):
#  - the same scikit-learn iris LogisticRegression served by MLServer 1.7.1's sklearn runtime
#    (parallel_workers 0, its best, and 1, its default), by servegraph through a Python
#    class (one worker, without and with batching), and by servegraph running MLServer's
#    own runtime unchanged from the same model folder (`model_settings:`, `mlserver_sklearn.
#    SKLearnModel` driven with MLServer's package; one worker, without and with batching);
#    `wrk -t2 -c32` and `-t1 -c1`, rounds alternating, the single-row OIP body;
#  - servegraph's own cost around a Python call: a Python `echo` step against a `noop`
#    transform, c=1 p50 (the difference is the Python step: two pipe writes, the worker's
#    decode and encode);
#  - `servegraph bench python`: the round trip in-process, 16 B and 1 MiB (shared memory)
#    against one memcpy of the same bytes.
# MLServer, scikit-learn and joblib go into their own venv (~/.cache/servegraph/venv-bench-python).
# Environment: DURATION (seconds per round, default 10), ROUNDS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/servegraph"
VENV="$CACHE/venv-bench-python"
# The same virtualenv as the tests' (scripts/setup.sh --test), from the same requirements
# (tests/python/mlserver-requirements.txt: uvloop kept below 0.22, see there).
if [ ! -x "$VENV/bin/mlserver" ] || ! "$VENV/bin/python" -c 'import uvloop, sys; sys.exit(tuple(map(int, uvloop.__version__.split(".")[:2])) >= (0, 22))'; then
  echo "bench-python: installing MLServer 1.7.1 and scikit-learn into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/mlserver-requirements.txt
fi
cargo build --release --locked --bin servegraph 2>&1 | tail -n 1
T="${CARGO_TARGET_DIR:-target}/release"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
trap 'cleanup; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The model, trained once (deterministic), in MLServer's layout.
mkdir -p "$WORK/mlserver/iris" "$WORK/graphs"
"$VENV/bin/python" - "$WORK/mlserver/iris/model.joblib" <<'PY'
import sys, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), sys.argv[1])
PY
cat >"$WORK/mlserver/iris/model-settings.json" <<'JSON'
{"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}
JSON
cp scripts/bench-python/models.py "$WORK/models.py"
py_model() { # NAME FIELDS
  printf '    %s: {kind: model, class: python, path: ../models.py, python: %s, %s}\n' "$1" "$VENV/bin/python" "$2"
}
{
  printf 'name: bench\ngraph:\n  kind: router\n  routes:\n'
  py_model iris "class_name: SklearnIris, model_uri: ../mlserver/iris/model.joblib"
  py_model iris-batch "class_name: SklearnIris, model_uri: ../mlserver/iris/model.joblib, batch: {max_size: 64}"
  # MLServer's own runtime, unchanged, from MLServer's model folder.
  printf '    %s: {kind: model, class: python, python: %s, model_settings: ../mlserver/iris%s}\n' \
    iris-mlmodel "$VENV/bin/python" "" iris-mlmodel-batch "$VENV/bin/python" ", batch: {max_size: 64}" \
    iris-mlmodel-w2 "$VENV/bin/python" ", workers: 2"
  py_model echo "function: echo"
  printf '    noop: {kind: transform, op: noop}\n'
} >"$WORK/graphs/bench.yaml"

start_mlserver() { # PARALLEL_WORKERS -> sets ADDR
  local port; port=$(free_port)
  local dir="$WORK/mlserver-pw$1"; mkdir -p "$dir"; cp -r "$WORK/mlserver/iris" "$dir/"
  printf '{"parallel_workers": %s, "http_port": %s, "grpc_port": %s, "metrics_port": %s, "metrics_endpoint": null}\n' \
    "$1" "$port" "$(free_port)" "$(free_port)" >"$dir/settings.json"
  (cd "$dir" && exec "$VENV/bin/mlserver" start . >"$dir/log" 2>&1) &
  pids+=($!)
  ADDR="127.0.0.1:$port"
  for _ in $(seq 300); do curl -sf "http://$ADDR/v2/models/iris/ready" >/dev/null && return; sleep 0.2; done
  echo "MLServer did not start:" >&2; cat "$dir/log" >&2; exit 1
}
start_mlserver 0; ml0=$ADDR
start_mlserver 1; ml1=$ADDR
out=$(mktemp)
RUST_LOG=warn "$T/servegraph" serve "$WORK/graphs/bench.yaml" --model-root "$WORK" --listen 127.0.0.1:0 >"$out" &
pids+=($!)
for _ in $(seq 100); do sg=$(sed -n 's/.*listening on http:\/\/\(.*\)/\1/p' "$out" | head -n1); [ -n "$sg" ] && break; sleep 0.1; done
until curl -sf "http://$sg/v2/health/ready" >/dev/null; do sleep 0.1; done

LUA="$PWD/scripts/body.lua"
run() { # LABEL URL WRK-ARGS...
  local label=$1 url=$2; shift 2
  wrk "$@" -d 2s -s "$LUA" "$url" >/dev/null
  printf '%s %s\n' "$label" "$(wrk "$@" -d "${DURATION}s" -s "$LUA" "$url" | sed -n 's/^RESULT //p')"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "${DURATION}s per round (after a 2 s warm-up), $ROUNDS rounds"
res=/tmp/servegraph-bench-python.txt
for _ in $(seq "$ROUNDS"); do
  for c in "-t2 -c32" "-t1 -c1"; do
    tag=c${c##*-c}
    # shellcheck disable=SC2086
    run "$tag mlserver-pw0" "http://$ml0/v2/models/iris/infer" $c
    # shellcheck disable=SC2086
    run "$tag mlserver-pw1" "http://$ml1/v2/models/iris/infer" $c
    # shellcheck disable=SC2086
    run "$tag servegraph" "http://$sg/v2/models/iris/infer" $c
    # shellcheck disable=SC2086
    run "$tag servegraph-batch" "http://$sg/v2/models/iris-batch/infer" $c
    # shellcheck disable=SC2086
    run "$tag servegraph-mlmodel" "http://$sg/v2/models/iris-mlmodel/infer" $c
    # shellcheck disable=SC2086
    run "$tag servegraph-mlmodel-batch" "http://$sg/v2/models/iris-mlmodel-batch/infer" $c
    # shellcheck disable=SC2086
    run "$tag servegraph-mlmodel-w2" "http://$sg/v2/models/iris-mlmodel-w2/infer" $c
  done
  run "c1 echo" "http://$sg/v2/models/echo/infer" -t1 -c1
  run "c1 noop" "http://$sg/v2/models/noop/infer" -t1 -c1
done | tee "$res"
awk '{ split($3, rr, "="); split($4, pp, "="); k = $1 " " $2; rps[k] += rr[2]; p50[k] += pp[2]; n[k]++ }
     END {
       split("c32 c1", cs, " ");
       for (i = 1; i <= 2; i++) {
         c = cs[i]; b = rps[c " mlserver-pw0"] / n[c " mlserver-pw0"];
         printf "%s: mlserver pw0 %.0f req/s (p50 %d us), pw1 %.0f; servegraph %.0f (%.1fx pw0, p50 %d us), with batching %.0f (%.1fx pw0)\n",
           c, b, p50[c " mlserver-pw0"] / n[c " mlserver-pw0"], rps[c " mlserver-pw1"] / n[c " mlserver-pw1"],
           rps[c " servegraph"] / n[c " servegraph"], rps[c " servegraph"] / n[c " servegraph"] / b, p50[c " servegraph"] / n[c " servegraph"],
           rps[c " servegraph-batch"] / n[c " servegraph-batch"], rps[c " servegraph-batch"] / n[c " servegraph-batch"] / b;
         m = rps[c " servegraph-mlmodel"] / n[c " servegraph-mlmodel"]; mb = rps[c " servegraph-mlmodel-batch"] / n[c " servegraph-mlmodel-batch"];
         printf "%s: MLServer'"'"'s SKLearnModel unchanged under servegraph %.0f req/s (%.1fx pw0, p50 %d us), with batching %.0f (%.1fx pw0)\n",
           c, m, m / b, p50[c " servegraph-mlmodel"] / n[c " servegraph-mlmodel"], mb, mb / b;
         w = rps[c " servegraph-mlmodel-w2"] / n[c " servegraph-mlmodel-w2"];
         printf "%s: the same with two workers %.0f req/s (%.1fx pw0)\n", c, w, w / b
       }
       e = p50["c1 echo"] / n["c1 echo"]; o = p50["c1 noop"] / n["c1 noop"];
       printf "python step at c=1: echo p50 %d us, noop p50 %d us: %d us for the Python step\n", e, o, e - o
     }' "$res"
# The Python round trip in-process (no HTTP): a tiny echo (the engine and transport alone)
# and a 1 MiB FP32 echo through shared memory, against a memcpy of the same bytes.
cleanup
"$T/servegraph" bench python --python "$VENV/bin/python" --sizes 16,1048576 --requests 20000
