#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; `--smoke` 10 s) with
# cargo-fuzz (libFuzzer). The full run is optimized under AddressSanitizer; the smoke run is an
# unoptimized build with debug assertions and overflow checks and no sanitizer, which builds in
# about 3 minutes here against about 11 for the full run's (vakt's dependencies dominate).
# The project's toolchain is stable: RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer
# flags. A crash leaves its input in fuzz/artifacts/TARGET/; add it as a
# regression test before fixing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=60 build=(-O)
[ "${1:-}" = "--smoke" ] && secs=10 build=(--dev -s none)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build "${build[@]}" >/dev/null 2>&1 || cargo fuzz build "${build[@]}"
mkdir -p corpus/profile corpus/rendered corpus/proc_stat corpus/storage corpus/ufw_rules corpus/daemon_json
cp ../profiles/*.toml corpus/profile/
cp ../profiles/*.toml corpus/rendered/
cp /proc/stat corpus/proc_stat/seed 2>/dev/null || true
cp /proc/self/mountinfo corpus/storage/seed 2>/dev/null || true
printf '### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368\n' > corpus/ufw_rules/seed
printf '{"storage-driver": "vfs", "log-opts": {"max-size": "10m"}}\n' > corpus/daemon_json/seed
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "fuzz: cargo fuzz list names no target"; exit 1; }
# One target per core at a time (libFuzzer runs one process per target here).
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for target in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || true; done
  ( cargo fuzz run "${build[@]}" "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=1024 -timeout=5 \
      > "$logs/$target" 2>&1 || echo "$target" >> "$logs/failed" ) &
done
wait
for target in $targets; do
  if grep -qx "$target" "$logs/failed" 2>/dev/null; then
    tail -30 "$logs/$target"; echo "fuzz: $target FAILED"
  else
    echo "fuzz: $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$logs/$target" | tail -n1)s, no crash"
  fi
done
[ ! -s "$logs/failed" ]
