#!/usr/bin/env bash
# Issue 4's benchmarks, in one run, against one local broker (Tansu, memory storage):
#  1. Kafka passthrough: a servegraph graph (decode the OIP JSON request, one noop step,
#     encode the response) from topic to topic, versus examples/bare_kafka.rs (consume →
#     produce, bytes copied); each on fresh 4-partition topics of COUNT pre-produced
#     messages; the rate from the first to the last result (group joins not counted).
#  2. HTTP with tracking to Kafka on vs off: graphs/iris.yaml's iris-lr at concurrency 32,
#     both servers up at once, alternating rounds.
# Nothing is pinned: servers, broker and load generators share the cores.
# Environment: COUNT (default 100000), ROUNDS (default 2), DURATION (HTTP seconds, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/kafka.sh install
cargo build --release --locked --bin servegraph --example bare_kafka
T="${CARGO_TARGET_DIR:-target}/release"
COUNT="${COUNT:-100000}"; ROUNDS="${ROUNDS:-2}"; DURATION="${DURATION:-8}"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER=$(scripts/kafka.sh start "$PORT")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; scripts/kafka.sh stop; }
trap cleanup EXIT
dir=$(mktemp -d)
REQ='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); broker $BROKER; $COUNT messages per round"

for r in $(seq "$ROUNDS"); do
  for target in bare servegraph; do
    in="bench-in-$target-$r"; out="bench-out-$target-$r"
    "$T/servegraph" bench kafka-produce --brokers "$BROKER" --topic "$in" --create "$out" --count "$COUNT" --data "$REQ" >/dev/null
    if [ "$target" = bare ]; then
      "$T/examples/bare_kafka" "$BROKER" "g-$target-$r" "$in" "$out" >/dev/null &
    else
      cat >"$dir/passthrough.yaml" <<YAML
name: passthrough
graph: {kind: flow, steps: {pass: {kind: transform, op: noop}}}
sources:
  kafka: {brokers: "$BROKER", group: "g-$target-$r", topics: [$in], output_topic: $out}
YAML
      RUST_LOG=warn "$T/servegraph" serve "$dir/passthrough.yaml" --listen 127.0.0.1:0 >/dev/null &
    fi
    pid=$!; pids+=("$pid")
    "$T/servegraph" bench kafka-measure --brokers "$BROKER" --topic "$out" --count "$COUNT" --label "$target"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done | tee "$dir/kafka.txt"
awk '/msgs\/s/ { name=$1; sub(":", "", name); rate[name]+=$4; n[name]++ }
     END { b=rate["bare"]/n["bare"]; s=rate["servegraph"]/n["servegraph"];
           printf "kafka passthrough: servegraph %.0f msgs/s, bare rdkafka loop %.0f msgs/s, ratio %.1f%%\n", s, b, 100*s/b }' "$dir/kafka.txt"

# HTTP with tracking to Kafka on vs off.
start() {
  local out; out=$(mktemp)
  RUST_LOG=warn "$@" >"$out" &
  pids+=($!)
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*listening on http:\/\/\(.*\)/\1/p' "$out" | head -n1)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
}
sed "s|\.\./models/|$PWD/models/|" graphs/iris.yaml >"$dir/off.yaml"
cp "$dir/off.yaml" "$dir/on.yaml"
echo "tracking: {sink: \"kafka://$BROKER/bench-events\", sample: 1, batch: 100}" >>"$dir/on.yaml"
start "$T/servegraph" serve "$dir/off.yaml" --listen 127.0.0.1:0; OFF=$ADDR
start "$T/servegraph" serve "$dir/on.yaml" --listen 127.0.0.1:0; ON=$ADDR
for a in $OFF $ON; do until curl -sf "http://$a/v2/health/ready" >/dev/null; do sleep 0.1; done; done
for r in $(seq "$ROUNDS"); do
  for target in off on; do
    if [ $target = off ]; then a=$OFF; else a=$ON; fi
    "$T/servegraph" bench http --url "http://$a/v2/models/iris-lr/infer" --data "$REQ" \
      --concurrency 32 --duration "$DURATION" --warmup 2 --label "tracking-$target"
  done
done | tee "$dir/http.txt"
awk '/req\/s/ { name=$1; sub(":", "", name); rate[name]+=$4; n[name]++ }
     END { off=rate["tracking-off"]/n["tracking-off"]; on=rate["tracking-on"]/n["tracking-on"];
           printf "http with tracking to Kafka: %.0f req/s vs %.0f req/s without, %.1f%% slower\n", on, off, 100*(off-on)/off }' "$dir/http.txt"
