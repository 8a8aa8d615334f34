#!/usr/bin/env bash
# gossip-roster next to chitchat 0.13.0 and foca 2.0.0 in the same run on loopback:
# cold-start convergence, propagation of a value set on one node, idle bytes per node per
# second, for N = 5, 20, 50; chitchat at a 100 ms and a 10 ms gossip interval, foca with its
# LAN configuration; ours both as N nodes in one process and as N gossip-node processes. Each
# row says whether the goal is met (cold start and value <= 0.5x the best peer, idle bytes
# <= 5x foca's). chitchat and foca are built only here (tools/compare), never as dependencies of
# gossip-roster.
#
#   tools/compare.sh                       # about 4 minutes after the build
#   GOSSIP_BENCH_SIZES=5 tools/compare.sh
#   COMPARE_ONLY_OURS=1 GOSSIP_BENCH_SIZES=20 tools/compare.sh   # our figures only, quick
set -euo pipefail
cd "$(dirname "$0")/.."
# Ours as users run it too: N gossip-node processes of the release binary.
cargo build --release --quiet --bins
export GOSSIP_NODE_BIN="$PWD/target/release/gossip-node"
cd tools/compare
cargo build --release --quiet
./target/release/gossip-roster-compare
