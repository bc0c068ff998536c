#!/usr/bin/env bash
# Installs what the tests need (idempotent), then runs formatting, lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export SERVEGRAPH_PYTHON="${SERVEGRAPH_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/servegraph/venv-test/bin/python}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
