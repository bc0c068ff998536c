#!/usr/bin/env bash
# Instructions per call of the worker's side of each Python API (scripts/bench-python-apis.py),
# counted by callgrind: (instructions of N calls - instructions of none) / N. A figure a busy
# machine does not move, unlike wall time. Usage:
#   scripts/bench-python-apis.sh [PYTHON] [PACKAGE_DIR]   (defaults: SERVEGRAPH_PYTHON or
#   python3, and this checkout's python/); N=5000 and CASES may be set in the environment.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-${SERVEGRAPH_PYTHON:-python3}}"
pkg="${2:-$here/python}"
n="${N:-5000}"
count() {
  PYTHONPATH="$pkg" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$py" "$here/scripts/bench-python-apis.py" "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'
}
for case in ${CASES:-native mlrun mlrun-body seldon seldon-body kserve kserve-async kserve-body mlserver}; do
  none=$(count "$case" 0)
  some=$(count "$case" "$n")
  echo "$case $(( (some - none) / n )) instructions per call"
done
