#!/usr/bin/env bash
# Before and after on one machine, back to back: vakt built at REV against the working tree's
# build, alternating on the bench's converged host (benches/converged.sh with BEFORE set):
# check and no-op apply in blocks, then first applies from the unconverged host. REV defaults
# to the code before the speed work of issue 27. Writes benches/ab.txt.
#   benches/ab.sh [REV]    as root; builds REV once into target/before (minutes), then about 2
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-ff17025^}
OUT=${AB_OUT:-benches/ab.txt}
cargo build --release --quiet
VAKT=${CARGO_TARGET_DIR:-$PWD/target}/release/vakt
T=$(mktemp -d)
trap 'git worktree remove --force "$T/src" 2>/dev/null || true; rm -rf "$T"' EXIT
git worktree add --detach --quiet "$T/src" "$REV"
CARGO_TARGET_DIR=$PWD/target/before cargo build --release --quiet --manifest-path "$T/src/Cargo.toml"
cp target/before/release/vakt "$T/before"
{
  echo "# vakt before and after, $(date -u +%Y-%m-%d): $(git rev-parse --short "$REV") against $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' with changes')"
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
} > "$OUT"
mkdir -p "$T/host"
BEFORE="$T/before" unshare -m -n --propagation private bash benches/converged.sh "$T/host" "$VAKT" 1 "$OUT"
cat "$OUT"
