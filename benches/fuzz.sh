#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; `--smoke` 10 s) with
# cargo-fuzz (libFuzzer). The project's toolchain is stable: RUSTC_BOOTSTRAP lets cargo-fuzz
# use the sanitizer flags. A crash leaves its input in fuzz/artifacts/TARGET/; add it as a
# regression test before fixing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=60
[ "${1:-}" = "--smoke" ] && secs=10
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O
mkdir -p corpus/profile corpus/rendered corpus/proc_stat corpus/storage corpus/ufw_rules corpus/daemon_json
cp ../profiles/*.toml corpus/profile/
cp ../profiles/*.toml corpus/rendered/
cp /proc/stat corpus/proc_stat/seed 2>/dev/null || true
cp /proc/self/mountinfo corpus/storage/seed 2>/dev/null || true
printf '### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368\n' > corpus/ufw_rules/seed
printf '{"storage-driver": "vfs", "log-opts": {"max-size": "10m"}}\n' > corpus/daemon_json/seed
for target in $(cargo fuzz list); do
  out=$(cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=1024 -timeout=5 2>&1) || { echo "$out" | tail -30; echo "fuzz: $target FAILED"; exit 1; }
  echo "fuzz: $target: $(echo "$out" | grep -Eo 'Done [0-9]+ runs in [0-9]+ second' | tail -n1)s, no crash"
done
