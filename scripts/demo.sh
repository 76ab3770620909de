#!/usr/bin/env bash
# Runs the ipfailover demo in network namespaces on this machine (root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p tests --bin demo
exec ./target/release/demo "$@"
