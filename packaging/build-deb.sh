#!/usr/bin/env bash
# Builds the Debian package target/debian/ipfailover_<version>_<arch>.deb:
# release binaries, man pages and shell completions (generated from the clap
# definitions by `ipfailover generate`), then `cargo deb` with the metadata
# in masterd/Cargo.toml. Needs cargo-deb (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: cargo-deb is missing: cargo install cargo-deb --locked (or scripts/setup.sh)" >&2
    exit 1
fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --workspace --bins
rm -rf "$target/release/man" "$target/release/completions"
"$target/release/ipfailover" generate man "$target/release/man"
"$target/release/ipfailover" generate completions "$target/release/completions"
cargo deb --locked --no-build -p masterd "$@"
ls -1 "$target"/debian/ipfailover_*.deb
