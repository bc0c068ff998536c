#!/usr/bin/env bash
# Issue 30's scale-out figures: graphs/iris.yaml (the 50/50 router over two ONNX models) fed
# from a 12-partition topic by 1, 2 and 3 `servegraph serve` processes in one consumer group,
# against one local broker (Tansu, memory storage).
#
# For each process count N: fresh topics and group; the N processes start and the script
# waits until they split the 12 partitions (each one's `servegraph_kafka_partition_assigned`
# metric); then COUNT requests are produced at once and the output topic is read until COUNT
# results arrived. Reported:
#   - throughput: COUNT over the time from the first to the last result (the results' own
#     timestamps, `servegraph bench kafka-measure`), group joins not counted;
#   - CPU per request of each process: its utime+stime (/proc/PID/stat) over the run divided
#     by the requests it answered (`servegraph_requests_total{source="kafka"}`), and of all
#     of them together.
# Nothing is pinned: the processes, the broker, the producer and the reader share the cores.
# On a 2-core machine the throughput ratio says little beyond 2 processes; CPU per request is
# the figure that carries over.
# Environment: COUNT (default 100000), PROCESSES (default "1 2 3").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/kafka.sh install
cargo build --release --locked --bin servegraph
T="${CARGO_TARGET_DIR:-target}/release"
COUNT="${COUNT:-100000}"; PROCESSES="${PROCESSES:-1 2 3}"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER=$(scripts/kafka.sh start "$PORT")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; scripts/kafka.sh stop; }
trap cleanup EXIT
dir=$(mktemp -d)
TICK=$(getconf CLK_TCK)
REQ='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); broker $BROKER; $COUNT requests per run"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
answered() {
  curl -sf "http://$1/metrics" | awk '/^servegraph_requests_total\{/ && /source="kafka"/ { n += $NF } END { print n + 0 }'
}
owned() {
  curl -sf "http://$1/metrics" | awk -v t="$2" '/^servegraph_kafka_partition_assigned\{/ && index($0, "topic=\"" t "\"") && $NF == 1 { n++ } END { print n + 0 }'
}

for n in $PROCESSES; do
  in="scale-in-$n"; out="scale-out-$n"; group="scale-$n"
  "$T/servegraph" bench kafka-produce --brokers "$BROKER" --topic "$in" --create "$out" --partitions 12 --count 0 --data "$REQ" >/dev/null
  sed "s|\.\./models/|$PWD/models/|" graphs/iris.yaml >"$dir/iris-$n.yaml"
  echo "sources: {kafka: {brokers: \"$BROKER\", group: $group, topics: [$in], output_topic: $out}}" >>"$dir/iris-$n.yaml"
  addrs=(); procs=()
  for i in $(seq "$n"); do
    log="$dir/serve-$n-$i.log"
    RUST_LOG=warn "$T/servegraph" serve "$dir/iris-$n.yaml" --listen 127.0.0.1:0 --model-root "$PWD" >"$log" 2>&1 &
    pid=$!; pids+=("$pid"); procs+=("$pid")
    for _ in $(seq 100); do
      addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$log" | head -n1)
      [ -n "$addr" ] && break
      sleep 0.1
    done
    [ -n "$addr" ] || { echo "servegraph did not start:" >&2; cat "$log" >&2; exit 1; }
    addrs+=("$addr")
  done
  # Wait (up to 60 s) until every process owns partitions and together they own all 12.
  for _ in $(seq 600); do
    total=0; each=1
    for a in "${addrs[@]}"; do o=$(owned "$a" "$in"); total=$((total + o)); [ "$o" -gt 0 ] || each=0; done
    [ "$total" -eq 12 ] && [ "$each" -eq 1 ] && break
    sleep 0.1
  done
  [ "$total" -eq 12 ] && [ "$each" -eq 1 ] || { echo "the $n processes did not split the partitions" >&2; exit 1; }
  before=(); for p in "${procs[@]}"; do before+=("$(cpu_ticks "$p")"); done
  # The topics exist (made above, before the processes subscribed): this only produces.
  "$T/servegraph" bench kafka-produce --brokers "$BROKER" --topic "$in" --partitions 12 --count "$COUNT" --data "$REQ" >/dev/null
  "$T/servegraph" bench kafka-measure --brokers "$BROKER" --topic "$out" --count "$COUNT" --label "processes-$n" | tee "$dir/rate-$n.txt"
  sleep 1
  all_ticks=0; all_answered=0
  for i in "${!procs[@]}"; do
    d=$(( $(cpu_ticks "${procs[$i]}") - ${before[$i]} )); a=$(answered "${addrs[$i]}")
    all_ticks=$((all_ticks + d)); all_answered=$((all_answered + a))
    awk -v d="$d" -v a="$a" -v t="$TICK" -v n="$n" -v i="$((i + 1))" \
      'BEGIN { printf "  process %d of %d: %d requests, %.1f s CPU, %.1f µs CPU per request\n", i, n, a, d / t, (a ? 1e6 * d / t / a : 0) }'
  done
  awk -v d="$all_ticks" -v a="$all_answered" -v t="$TICK" -v n="$n" \
    'BEGIN { printf "  all %d: %d requests answered, %.1f µs CPU per request\n", n, a, 1e6 * d / t / a }'
  for p in "${procs[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done
