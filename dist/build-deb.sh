#!/usr/bin/env bash
# Builds the Debian package: the release binary, the manual page and shell completions
# generated from the CLI definition (examples/gen_assets.rs), then `cargo deb`. Prints the
# package's path. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet
cargo run --release --quiet --example gen_assets -- "$target/assets"
# cargo deb reads the assets from target/ as Cargo.toml names them.
if [ "$target" != "$PWD/target" ]; then mkdir -p target && rm -rf target/assets && cp -r "$target/assets" target/assets; fi
cargo deb --no-build --quiet >/dev/null
ls -t "$target"/debian/vakt_*.deb | head -n 1
