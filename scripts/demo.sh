#!/usr/bin/env bash
# Runs the ipfailover demo in network namespaces on this machine (root):
#   scripts/demo.sh [--nodes N] [--no-failover] [--keep]
# The demo starts masterd (and through it every daemon built) on each node, so
# every binary of the workspace is built first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --workspace --bins
exec ./target/release/demo "$@"
