#!/usr/bin/env bash
# Runs one fuzz target (cargo fuzz, libFuzzer) for a while; crashes land in
# tools/fuzz/artifacts/<target>/. Targets: frame_decode, wal_decode, handshake.
#
#   tools/fuzz.sh frame_decode        # 10 minutes
#   tools/fuzz.sh wal_decode 60       # 60 seconds
#
# cargo-fuzz needs nightly compiler flags; this machine has the stable toolchain only, so
# RUSTC_BOOTSTRAP=1 unlocks them (first run: `cargo install cargo-fuzz`).
set -euo pipefail
target="${1:?target: frame_decode | wal_decode | handshake}"
secs="${2:-600}"
cd "$(dirname "$0")/fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . -O "$target" -- -max_total_time="$secs" 2>&1 | grep -E "^Done|SUMMARY|panicked|crash-" || true
