#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need (its installer first
# proven against a fresh machine's conditions), proves the host's own firewall, ufw, nginx and
# Docker configuration are left byte-identical, naming any path that appeared, went or changed,
# and runs every tier:
# lints; unit, property, fixture-tree and system tests against real ufw/iptables, dockerd,
# nginx, journald, node_exporter and the kernel, each started privately; crash safety with
# the test-only failpoints; cargo deny; the benchmark and fuzzing suites in smoke mode; and
# the VM end-to-end test. VAKT_QUICK=1 skips the last four outside CI.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(ufw iptables iproute2 nginx docker.io curl busybox-static prometheus-node-exporter prometheus util-linux procps systemd hyperfine python3 certbot pebble openssl openssh-server lintian)
policy_rc_d=/usr/sbin/policy-rc.d

fail() { echo "tests/run.sh: FAILED: $*" >&2; exit 1; }
# A stage's heading, with the minutes and seconds the run has taken so far: the log shows
# where CI's time goes.
stage() { printf '== %s [at %d:%02d]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

# Installs the packages that are not installed (held ones count as installed, as in vakt) with
# the policy hook POLICY denying service starts: the tests start private instances. A hook
# that already exists (images built for containers ship one) is used as it is and left alone.
install_missing() {
  local policy=$1 missing=() p created= rc=0
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^.i' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "tests/run.sh: installing ${missing[*]}"
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; created=1; fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  if [ -n "$created" ]; then rm -f "$policy"; fi
  return "$rc"
}

# install_missing on a fresh machine, whatever this one has: stand-ins for dpkg-query (nothing
# installed) and apt-get (records whether the hook denied starts during the install), once with
# a hook already there and once without. The run must go on, a hook it found must be byte-
# identical afterwards, and one it made must be gone.
selftest_install_missing() {
  local d hook log sum
  d=$(mktemp -d); hook=$d/policy-rc.d; log=$d/apt.log
  mkdir "$d/bin"
  printf '#!/bin/sh\nexit 1\n' > "$d/bin/dpkg-query"
  printf '#!/bin/sh\ncase " $* " in *" install "*) "%s"; echo "install hook-exit=$?" >> "%s";; esac\n' "$hook" "$log" > "$d/bin/apt-get"
  chmod 755 "$d/bin/dpkg-query" "$d/bin/apt-get"
  printf '#!/bin/sh\n# the machine'"'"'s own hook\nexit 101\n' > "$hook"; chmod 755 "$hook"
  sum=$(sha256sum < "$hook")
  (PATH="$d/bin:$PATH" install_missing "$hook" >/dev/null) || fail "install_missing returned non-zero where policy-rc.d already existed"
  [ "$(sha256sum < "$hook")" = "$sum" ] || fail "install_missing changed an existing policy-rc.d"
  rm "$hook"
  (PATH="$d/bin:$PATH" install_missing "$hook" >/dev/null) || fail "install_missing returned non-zero where policy-rc.d was absent"
  [ ! -e "$hook" ] || fail "install_missing left behind the policy-rc.d it created"
  [ "$(cat "$log")" = "$(printf 'install hook-exit=101\ninstall hook-exit=101')" ] \
    || fail "service starts were not denied during both installs: $(cat "$log")"
  rm -rf "$d"
}

# One line per watched path that exists, and per path under it: type, mode, owner and content
# hash (or link target), so a file or directory that appears, goes or changes is named.
paths_state() {
  local present=() p
  for p in "$@"; do { [ -e "$p" ] || [ -L "$p" ]; } && present+=("$p"); done
  [ ${#present[@]} -eq 0 ] && return 0
  find "${present[@]}" -print0 | sort -z | while IFS= read -r -d '' p; do
    if [ -L "$p" ]; then h="-> $(readlink "$p")"
    elif [ -f "$p" ]; then h=$(sha256sum < "$p" | cut -c1-64)
    else h=-; fi
    printf '%s\t%s %s\n' "$p" "$(stat -c '%F %a %U:%G' "$p")" "$h"
  done
}

# What the suite must never change on this machine: the firewall rules, IP forwarding, and
# everything under the firewall, web server, Docker and sysctl configuration, including files
# and directories that did not exist before (a test dockerd writing its key.json there).
watched=(/etc/ufw /etc/default/ufw /etc/nginx /etc/letsencrypt /etc/docker /etc/sysctl.d "$policy_rc_d")
firewall_rules() {
  command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -v '^#' || true
  command -v ip6tables-save >/dev/null && ip6tables-save 2>/dev/null | grep -v '^#' || true
}
host_state() {
  paths_state "${watched[@]}"
  printf 'firewall rules (iptables-save, ip6tables-save)\t%s\n' "$(firewall_rules | sha256sum | cut -c1-64)"
  printf '/proc/sys/net/ipv4/ip_forward\t%s\n' "$(cat /proc/sys/net/ipv4/ip_forward)"
}

# Prints "created: P", "removed: P" or "changed: P" for each path whose line differs.
state_changes() {
  awk -F'\t' '$1 == "" { next }
    NR == FNR { was[$1] = $2; next }
    { seen[$1] = 1; if (!($1 in was)) print "created: " $1; else if (was[$1] != $2) print "changed: " $1 }
    END { for (p in was) if (!(p in seen)) print "removed: " p }' <(printf '%s\n' "$1") <(printf '%s\n' "$2") | sort
}

# The test binaries cargo builds, one "NAME EXECUTABLE" line each (NAME: the target and its
# kind, as in vakt:lib, vakt:bin or docker:test).
test_binaries() {
  cargo test --all-targets --features failpoints --no-run --message-format=json-render-diagnostics |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"] + ":" + m["target"]["kind"][0], m["executable"])'
}

# Runs the test binaries VAKT_TEST_LANES at a time (default 4). Most system tests wait on
# dockerd, ufw or a watch window rather than compute, so binaries side by side finish in less
# than half the time of cargo's one after another on two cores; the tests within a binary run
# as cargo runs them. The slowest start first. `workload` and `watch` share a lane, one after
# the other: both judge this machine's own CPU and I/O figures, which each other's load moves.
# A binary's results are printed when it ends (a failing one's whole output), with its time.
# Every binary cargo built must end in success: one that failed, died or never ran fails the
# stage, after the others have run.
run_tests() {
  local lanes=${VAKT_TEST_LANES:-4} logs all name started=$SECONDS
  [[ $lanes =~ ^[1-9][0-9]*$ ]] || fail "VAKT_TEST_LANES must be a whole number of at least 1, not '$lanes'"
  local first=("workload:test watch:test" published_ports:test firewall_model:test overlap:test swarm:test docker:test vakt:lib)
  all=$(test_binaries) || fail "the tests did not build"
  [ -n "$all" ] || fail "cargo listed no test binary"
  logs=$(mktemp -d)
  # One line per lane's job: NAME EXE pairs, the groups and the slow ones first.
  awk -v groups="$(printf '%s\n' "${first[@]}")" '
    BEGIN { n = split(groups, g, "\n"); for (i = 1; i <= n; i++) { k = split(g[i], names, " "); for (j = 1; j <= k; j++) job[names[j]] = i } }
    $1 in job { line[job[$1]] = line[job[$1]] " " $1 " " $2; next }
    { rest[++r] = $1 " " $2 }
    END { for (i = 1; i <= n; i++) if (i in line) print substr(line[i], 2); for (i = 1; i <= r; i++) print rest[i] }' <<< "$all" > "$logs/order"
  [ "$(wc -w < "$logs/order")" = "$(( 2 * $(wc -l <<< "$all") ))" ] || fail "the test binaries were not all scheduled"
  trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
  local job
  while read -r -a job; do
    while [ "$(jobs -rp | wc -l)" -ge "$lanes" ]; do wait -n || true; done
    (
      for ((k = 0; k < ${#job[@]}; k += 2)); do
        name=${job[k]} t=$SECONDS
        if "${job[k + 1]}" > "$logs/$name.log" 2>&1; then status=ok; touch "$logs/$name.ok"; else status=FAILED; fi
        {
          flock 9
          echo "-- $name: $status in $((SECONDS - t)) s"
          if [ "$status" = ok ]; then grep -E '^(test |running )' "$logs/$name.log" || true; else cat "$logs/$name.log"; fi
        } 9>> "$logs/lock"
      done
    ) &
  done < "$logs/order"
  wait
  trap - INT TERM
  local failed=()
  for name in $(awk '{ for (i = 1; i <= NF; i += 2) print $i }' "$logs/order"); do
    [ -e "$logs/$name.ok" ] || failed+=("$name")
  done
  rm -rf "$logs"
  echo "tests: $(wc -l <<< "$all") binaries built and run in $((SECONDS - started)) s, $lanes at a time"
  [ ${#failed[@]} -eq 0 ] || fail "test binaries that did not pass: ${failed[*]}"
}

selftest_install_missing
if [ "$(id -u)" = 0 ]; then
  hook_before=$(paths_state "$policy_rc_d")
  install_missing "$policy_rc_d"
  [ "$(paths_state "$policy_rc_d")" = "$hook_before" ] || fail "installing the packages created, removed or changed $policy_rc_d"
else
  echo "tests/run.sh: not root: system tests that need root will skip (never under CI=true)"
fi

before=$(host_state)
rules_before=$(firewall_rules)

stage "lints"
cargo fmt --check
cargo clippy --all-targets --all-features --quiet -- -D warnings

stage "tests (unit, property, fixture trees, system, crash safety)"
run_tests

quick=${VAKT_QUICK:-}
[ "${CI:-}" = true ] && quick=
if [ -z "$quick" ]; then
  stage "cargo deny (licenses, bans, sources)"
  command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --quiet
  cargo deny check licenses bans sources 2>&1 | tail -n 1

  stage "benchmarks (smoke)"
  BENCH_OUT=target/bench-smoke.txt benches/bench.sh --smoke | tail -n 20

  stage "fuzzing (smoke)"
  benches/fuzz.sh --smoke

  stage "Debian package (lintian: no error, no warning without a justified override)"
  command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
  deb=$(dist/build-deb.sh | tail -n 1)
  lintian --fail-on error,warning "$deb"

  stage "VM end-to-end"
  tests/vm/run.sh

  stage "Vagrant end-to-end (vagrant/Vagrantfile on a local box, private libvirt)"
  tests/vagrant/run.sh
fi

after=$(host_state)
if [ "$before" != "$after" ]; then
  echo "tests/run.sh: FAILED: the suite changed this machine (the tests must only touch private copies):" >&2
  state_changes "$before" "$after" >&2
  diff <(echo "$rules_before") <(firewall_rules) >&2 || true
  exit 1
fi
echo "== host untouched: iptables, ip_forward, and every path under ${watched[*]} are as before"
echo "tests/run.sh: every tier passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
