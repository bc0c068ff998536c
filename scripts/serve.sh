#!/usr/bin/env bash
# Installs what servegraph needs (idempotent), builds it, and serves a graph.
#   scripts/serve.sh                       serves graphs/iris.yaml on 127.0.0.1:8080
#   scripts/serve.sh GRAPH [serve options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
graph="${1:-graphs/iris.yaml}"
[ $# -gt 0 ] && shift
exec cargo run --release --locked -- serve "$graph" "$@"
