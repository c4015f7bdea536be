#!/usr/bin/env bash
# The benchmark suite: wall times (hyperfine medians, min–max) of vakt --version, check and
# no-op apply on a converged host of private real components, the first apply, the exposure
# audit at a million sockets and DNAT rules, and the footprint of `vakt watch` beside
# node_exporter. Writes benches/results.txt.
#   benches/bench.sh           full run (as root; about 3 minutes)
#   benches/bench.sh --smoke   few runs and a 10 s watch sample, for CI
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=30; WATCH_SECS=60
if [ "${1:-}" = "--smoke" ]; then RUNS=5; WATCH_SECS=10; fi
OUT=${BENCH_OUT:-benches/results.txt}
cargo build --release --quiet
cargo build --release --quiet --example exposure_scale
VAKT=${CARGO_TARGET_DIR:-$PWD/target}/release/vakt
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT

{
  echo "# vakt benchmarks, $(date -u +%Y-%m-%d)"
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, $(systemd-detect-virt --vm 2>/dev/null || echo unknown) VM, container: $(systemd-detect-virt --container 2>/dev/null || echo none), kernel $(uname -r)"
  echo "release binary: $(stat -c %s "$VAKT") bytes"
} > "$OUT"

# `check` on this machine finds drift (exit 1): the time is what counts here.
hyperfine -N -i --warmup 3 --runs "$RUNS" --style basic --export-json "$T/basic.json" \
  -n "vakt --version" "$VAKT --version" \
  -n "vakt check --only host (this machine)" "$VAKT check -q --only host" \
  -n "vakt check (this machine, built-in profile)" "$VAKT check -q" > /dev/null
python3 - "$T/basic.json" >> "$OUT" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(r["times"])
    print(f"{r['command']}: median {r['median']*1000:.1f} ms (min {t[0]*1000:.1f}, max {t[-1]*1000:.1f}, {len(t)} runs)")
PY

# The exposure audit at scale: three runs, the median total.
scale=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/exposure_scale
for i in 1 2 3; do "$scale"; done | sort -t' ' -k18 -n | sed -n 2p | sed 's/^/median of 3: /' >> "$OUT"

mkdir -p "$T/host"
unshare -m -n --propagation private bash benches/converged.sh "$T/host" "$VAKT" "$RUNS" "$OUT"

# Footprint: vakt watch at a 1 s interval with metrics on and the workload asked of a real
# Prometheus every second (scraping node_exporter: the queries' answers are what count, not
# their meaning), beside node_exporter, same window.
printf '[watch]\ninterval = "1s"\nwindow = "1m"\nmetrics = "127.0.0.1:19477"\n\n[watch.workload]\nprometheus = "http://127.0.0.1:19090"\nrate_query = "sum(rate(node_cpu_seconds_total[5s]))"\nservices_query = "count(node_cpu_seconds_total)"\nevery = "1s"\ntimeout = "500ms"\nbaseline = "1m"\n' > "$T/watch.toml"
printf 'global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ["127.0.0.1:19100"]\n' > "$T/prometheus.yml"
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prom" --web.listen-address=127.0.0.1:19090 >/dev/null 2>&1 & ppid=$!
"$VAKT" watch -p "$T/watch.toml" 2>/dev/null & wpid=$!
prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >/dev/null 2>&1 & npid=$!
sleep 2
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
w0=$(ticks $wpid); n0=$(ticks $npid)
for i in $(seq 1 "$WATCH_SECS"); do
  curl -s 127.0.0.1:19477/metrics >/dev/null; curl -s 127.0.0.1:19100/metrics >/dev/null; sleep 1
done
w1=$(ticks $wpid); n1=$(ticks $npid)
hz=$(getconf CLK_TCK)
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
up=$(curl -s 127.0.0.1:19477/metrics | awk '$1=="vakt_workload_up"{print $2}')
echo "vakt watch over ${WATCH_SECS}s (1 s interval, scraped every second, the workload asked of Prometheus every second, vakt_workload_up ${up:-absent}): VmRSS $(rss $wpid) KiB, CPU $(python3 -c "print(f'{($w1-$w0)/$hz/$WATCH_SECS*100:.3f}')") % of one core" >> "$OUT"
echo "node_exporter, same window and scrapes: VmRSS $(rss $npid) KiB, CPU $(python3 -c "print(f'{($n1-$n0)/$hz/$WATCH_SECS*100:.3f}')") % of one core" >> "$OUT"
kill $wpid $npid $ppid
cat "$OUT"
