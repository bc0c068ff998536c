#!/usr/bin/env bash
# Runs one fuzz target for a while: scripts/fuzz.sh graph_yaml|oip_decode [SECONDS=600]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpus grows in
# fuzz/corpus/TARGET (not committed); a crashing input is copied to fuzz/regressions/TARGET/,
# which `cargo test` replays, and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh graph_yaml|oip_decode [SECONDS]}
secs=${2:-600}
corpus=fuzz/corpus/$target
mkdir -p "$corpus" "fuzz/regressions/$target"
cp -n fuzz/regressions/"$target"/* "$corpus"/ 2>/dev/null || true
if [ "$target" = graph_yaml ]; then
  cp -n graphs/*.yaml tests/graphs/invalid/*.yaml "$corpus"/ 2>/dev/null || true
fi
status=0
cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 || status=$?
shopt -s nullglob
for crash in fuzz/artifacts/"$target"/*; do
  cp "$crash" "fuzz/regressions/$target/"
  echo "kept $crash in fuzz/regressions/$target/ (replayed by cargo test)"
done
exit $status
