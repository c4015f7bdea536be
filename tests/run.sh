#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, proves the host's own
# firewall, ufw, nginx and Docker configuration are left byte-identical, and runs every tier:
# lints; unit, property, fixture-tree and system tests against real ufw/iptables, dockerd,
# nginx, journald, node_exporter and the kernel, each started privately; crash safety with
# the test-only failpoints; cargo deny; the benchmark and fuzzing suites in smoke mode; and
# the VM end-to-end test. VAKT_QUICK=1 skips the last four outside CI.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(ufw iptables iproute2 nginx docker.io curl prometheus-node-exporter prometheus util-linux procps systemd hyperfine python3)

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "tests/run.sh: installing ${missing[*]}"
  # Install without starting the packages' services: the tests start private instances.
  local policy=/usr/sbin/policy-rc.d created=
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; created=1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$created" ] && rm -f "$policy"
}

# What the suite must never change on this machine.
host_state() {
  {
    command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -v '^#' || true
    command -v ip6tables-save >/dev/null && ip6tables-save 2>/dev/null | grep -v '^#' || true
    find /etc/ufw /etc/default/ufw /etc/nginx /etc/docker /etc/sysctl.d -type f 2>/dev/null | sort | xargs -r sha256sum
    cat /proc/sys/net/ipv4/ip_forward
  }
}

if [ "$(id -u)" = 0 ]; then
  install_missing
else
  echo "tests/run.sh: not root: system tests that need root will skip (never under CI=true)"
fi

before=$(host_state)

echo "== lints"
cargo fmt --check
cargo clippy --all-targets --all-features --quiet -- -D warnings

echo "== tests (unit, property, fixture trees, system, crash safety)"
cargo test --all-targets --features failpoints

quick=${VAKT_QUICK:-}
[ "${CI:-}" = true ] && quick=
if [ -z "$quick" ]; then
  echo "== cargo deny (licenses, bans, sources)"
  command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --quiet
  cargo deny check licenses bans sources 2>&1 | tail -n 1

  echo "== benchmarks (smoke)"
  BENCH_OUT=target/bench-smoke.txt benches/bench.sh --smoke | tail -n 20

  echo "== fuzzing (smoke)"
  benches/fuzz.sh --smoke

  echo "== VM end-to-end"
  tests/vm/run.sh
fi

after=$(host_state)
if [ "$before" != "$after" ]; then
  echo "tests/run.sh: FAILED: the suite changed this machine's firewall, /etc/ufw, /etc/nginx, /etc/docker or sysctls:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "== host untouched: iptables, /etc/ufw, /etc/nginx, /etc/docker, sysctls are as before"
