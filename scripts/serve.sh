#!/usr/bin/env bash
# Installs what servegraph needs (idempotent), builds it, and serves a graph.
#   scripts/serve.sh                       serves graphs/iris.yaml on 127.0.0.1:8080
#   scripts/serve.sh GRAPH [serve options]
#   scripts/serve.sh [serve options]       serves graphs/iris.yaml with those options
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A first argument that is an option (`--listen ADDR`) is not the graph: the default graph
# is served with it.
graph=graphs/iris.yaml
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  graph=$1
  shift
fi
exec cargo run --release --locked -- serve "$graph" "$@"
