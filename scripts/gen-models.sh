#!/usr/bin/env bash
# Regenerates models/*.onnx and models/iris_expected.json with pinned tools. The outputs are
# committed: nothing needs this to build, test or serve.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/servegraph/venv-models"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r models/requirements.txt
fi
"$VENV/bin/python" models/generate.py
