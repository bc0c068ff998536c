#!/usr/bin/env bash
# Soak and overload (issue 6), in one run against one server:
#  1. capacity: closed loop, 32 connections, 10 s: the sustainable rate CAP;
#  2. soak: open loop at CAP/2 for SOAK_SECS (default 600), RSS sampled every 10 s;
#  3. overload: open loop at 2×CAP for OVERLOAD_SECS (default 60): share of 429s, p99 of the
#     served requests and of the refusals, RSS.
# The graph: graphs/iris.yaml's random forest behind `max_in_flight: 32`, 64 rows per request.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked --bin servegraph
T="${CARGO_TARGET_DIR:-target}/release"
SOAK_SECS="${SOAK_SECS:-600}"
OVERLOAD_SECS="${OVERLOAD_SECS:-60}"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

sed -e "s|\.\./models/|$PWD/models/|" -e 's/^name: iris$/name: iris\nmax_in_flight: 32/' \
  graphs/iris.yaml > "$work/soak.yaml"
python3 - "$work/req.json" <<'PY'
import json, sys
rows = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.7, 2.8, 4.5, 1.3]] * 16
json.dump({"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}, open(sys.argv[1], "w"))
PY
RUST_LOG=warn "$T/servegraph" serve "$work/soak.yaml" --listen 127.0.0.1:0 > "$work/out" &
SERVER=$!; pids+=($SERVER)
ADDR=""
for _ in $(seq 100); do
  ADDR=$(sed -n 's/.*listening on http:\/\/\(.*\)/\1/p' "$work/out" | head -n1); [ -n "$ADDR" ] && break; sleep 0.1
done
until curl -sf "http://$ADDR/v2/health/ready" >/dev/null; do sleep 0.1; done
URL="http://$ADDR/v2/models/iris-rf/infer"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"

rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
sample_rss() { # sample_rss FILE: RSS (KiB) every 10 s until killed
  while true; do echo "$(date +%s) $(rss)" >> "$1"; sleep 10; done
}

cap_line=$("$T/servegraph" bench http --url "$URL" --data "@$work/req.json" --concurrency 32 --duration 10 --warmup 2 --label capacity)
echo "$cap_line"
CAP=$(echo "$cap_line" | sed -n 's/.*: \([0-9]*\) req\/s.*/\1/p')
echo "rss after warm-up: $(rss) KiB"

sample_rss "$work/rss-soak" & pids+=($!)
"$T/servegraph" bench http --url "$URL" --data "@$work/req.json" --rate $((CAP / 2)) \
  --concurrency 64 --duration "$SOAK_SECS" --warmup 5 --label "soak (CAP/2)"
kill "${pids[-1]}"
awk 'NR==1 {first=$2} {last=$2; if ($2>max) max=$2; if (min==""||$2<min) min=$2}
     END {printf "soak rss: first %d KiB, last %d KiB, min %d, max %d (%d samples)\n", first, last, min, max, NR}' "$work/rss-soak"

sample_rss "$work/rss-over" & pids+=($!)
"$T/servegraph" bench http --url "$URL" --data "@$work/req.json" --rate $((CAP * 2)) \
  --concurrency 256 --duration "$OVERLOAD_SECS" --warmup 5 --threads 1 --label "overload (2×CAP)"
kill "${pids[-1]}"
awk 'NR==1 {first=$2} {last=$2; if ($2>max) max=$2}
     END {printf "overload rss: first %d KiB, last %d KiB, max %d (%d samples)\n", first, last, max, NR}' "$work/rss-over"
echo "rss at the end: $(rss) KiB"
