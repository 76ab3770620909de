#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and integration tests
# that build their own network namespaces (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries the integration tests run)" >&2
cargo build --workspace --bins --locked
echo "== cargo test" >&2
cargo test --workspace --all-targets --locked
