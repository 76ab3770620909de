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
# IPF_PROFILE=dev packages the debug build (the test suite uses it to check
# the package's contents without a second, release build).
profile="${IPF_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --release --locked --workspace --bins
    out="$target/release"
else
    cargo build --profile "$profile" --locked --workspace --bins
    out="$target/debug"
fi
rm -rf "$out/man" "$out/completions"
"$out/ipfailover" generate man "$out/man"
"$out/ipfailover" generate completions "$out/completions"
cargo deb --locked --no-build --profile "$profile" -p masterd "$@"
ls -1 "$target"/debian/ipfailover_*.deb
