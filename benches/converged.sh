#!/usr/bin/env bash
# Runs inside a private network and mount namespace (started by benches/bench.sh): builds a
# host tree T whose ufw state, Docker engine, nginx and /run are private and bound over the
# live paths, so that vakt runs as this namespace's live host (`--root` would prepare an image
# offline), converges it with `vakt apply`, and times check / no-op apply with hyperfine.
# Nothing of the real host changes.
set -euo pipefail
T=$1; VAKT=$2; RUNS=$3; OUT=$4
mkdir -p "$T/etc/default" "$T/run/sshd" "$T/etc/nginx" "$T/etc/docker" "$T/etc/ssh" "$T/var/lib/dpkg"
cp -a /etc/ufw "$T/etc/ufw"
for f in user.rules user6.rules ufw.conf; do cp /usr/share/ufw/$f "$T/etc/ufw/$f"; done
cp /etc/default/ufw "$T/etc/default/ufw"
cp /etc/nginx/mime.types "$T/etc/nginx/"
printf 'Port 22\n' > "$T/etc/ssh/sshd_config"
# The machine's host keys, as any real host has them: without keys `sshd -T` refuses to run.
for k in /etc/ssh/ssh_host_*_key; do if [ -f "$k" ]; then cp -p "$k" "$T/etc/ssh/"; fi; done
ln -s /proc "$T/proc"; ln -s /sys "$T/sys"
for d in etc/ufw etc/default/ufw etc/ssh etc/nginx etc/docker run; do mount --bind "$T/$d" "/$d"; done
ip link set lo up
ip link add vkb0 type veth peer name vkb1
ip addr add 10.250.0.2/24 dev vkb0; ip link set vkb0 up; ip link set vkb1 up
ip route add default via 10.250.0.1 dev vkb0

cat > "$T/profile.toml" <<PROFILE
[firewall]
[[firewall.allow]]
port = 22
[[firewall.allow]]
port = 80
[[firewall.allow]]
port = 8080
[[firewall.allow]]
port = 2377
[docker]
storage_driver = "overlay2"
host = "unix://$T/docker.sock"
[docker.daemon]
labels = ["vakt=bench"]
log-opts = { max-size = "10m" }
[swarm]
advertise_addr = "vkb0"
[nginx]
listen = "127.0.0.1:18080"
error_log = "$T/nginx-error.log"
access_log = "$T/nginx-access.log"
PROFILE
P="$T/profile.toml"

# Stop the private daemons however this script ends.
cleanup() {
  nginx -s quit -c /etc/nginx/nginx.conf 2>/dev/null || true
  [ -f "$T/docker.pid" ] && kill "$(cat "$T/docker.pid")" 2>/dev/null || true
  sleep 2
}
trap cleanup EXIT

# The private engine, started by bin/start-dockerd; there is no systemd here, so a `systemctl`
# stand-in first on PATH restarts it when vakt runs `systemctl restart docker`, as
# docker.service's restart would (stop, start, ready once the engine answers), and signals it for
# `systemctl reload docker` as docker.service's ExecReload does.
mkdir -p "$T/bin"
cat > "$T/bin/start-dockerd" <<START
#!/bin/sh
rm -f "$T/docker.sock"
"$(realpath "$(dirname "$0")/../tests/common/private-dockerd.sh")" "$T" >>"$T/dockerd.log" 2>&1 &
for i in \$(seq 1 600); do curl -sf --unix-socket "$T/docker.sock" http://d/_ping >/dev/null 2>&1 && exit 0; sleep 0.05; done
exit 1
START
cat > "$T/bin/systemctl" <<STANDIN
#!/bin/sh
[ "\$*" = "reload docker" ] && exec kill -HUP "\$(cat "$T/docker.pid")"
[ "\$*" = "restart docker" ] || { echo "the bench's systemctl handles only 'restart docker' and 'reload docker'" >&2; exit 1; }
date +%s%N >> "$T/restart.began"
pid=\$(cat "$T/docker.pid"); kill "\$pid"
while kill -0 "\$pid" 2>/dev/null; do sleep 0.02; done
"$T/bin/start-dockerd" || exit 1
date +%s%N >> "$T/restart.back"
STANDIN
chmod 755 "$T/bin/start-dockerd" "$T/bin/systemctl"
export PATH="$T/bin:$PATH"
echo '{"storage-driver": "overlay2"}' > "$T/etc/docker/daemon.json"
start-dockerd

FLOOR="python3 $(dirname "$0")/floor.py"
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %d / median %d / max %d ms", a[1], a[int((NR+1)/2)], a[NR]}'; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
fresh_ufw() { ufw --force disable >/dev/null; cp /usr/share/ufw/user.rules /usr/share/ufw/user6.rules /usr/share/ufw/ufw.conf "$T/etc/ufw/"; }
# The host as it was before the first apply: ufw as packaged, no nginx.conf, out of the swarm.
unconverge() {
  fresh_ufw
  rm -f /etc/nginx/nginx.conf /etc/nginx/nginx.conf.vakt-prev
  curl -sf -X POST --unix-socket "$T/docker.sock" "http://d/swarm/leave?force=true" >/dev/null
  echo '{"storage-driver": "overlay2"}' > "$T/etc/docker/daemon.json"
}
# Before and after (benches/ab.sh sets BEFORE to another build of vakt): the two binaries
# alternate on this one host, and nothing else is measured. Check and no-op apply in blocks of
# 20 runs (each block warmed up: a kept sshd -T answer is the binary's own), then first applies
# from the unconverged host, each set against the restart it made and the engine's own wait.
if [ -n "${BEFORE:-}" ]; then
  "$VAKT" apply -p "$P" -q >/dev/null
  nginx -c /etc/nginx/nginx.conf
  echo "before: $BEFORE; after: $VAKT" >> "$OUT"
  for verb in check apply; do
    declare -A blocks=([before]="" [after]="")
    for round in 1 2 3 4 5; do
      for who in before after; do
        bin=$VAKT; [ "$who" = before ] && bin=$BEFORE
        hyperfine -N -i --warmup 5 --runs 20 --style basic --export-json "$T/ab.json" "$bin $verb -p $P -q" >/dev/null
        blocks[$who]+=" $(python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"] * 1000))' "$T/ab.json")"
      done
    done
    echo "$verb on the converged host, hyperfine medians of 5 alternating blocks of 20 runs: before${blocks[before]} ms; after${blocks[after]} ms" >> "$OUT"
  done
  declare -A total=() above=() rest=()
  for i in 1 2 3 4; do
    for who in before after; do
      bin=$VAKT; [ "$who" = before ] && bin=$BEFORE
      unconverge
      rm -f "$T/restart.began" "$T/restart.back"
      mark=$(wc -l < "$T/dockerd.log")
      start=$(date +%s%N)
      "$bin" apply -p "$P" -q >/dev/null || { echo "the $who apply failed"; exit 1; }
      took=$(ms "$start" "$(date +%s%N)")
      over=$(( took - $(ms "$(cat "$T/restart.began")" "$(cat "$T/restart.back")") ))
      total[$who]+=" $took"; above[$who]+=" $over"
      rest[$who]+=" $(( over - $($FLOOR swarm-wait "$T/dockerd.log" "$mark") ))"
    done
  done
  for who in before after; do
    echo "first apply, $who, 4 runs alternating: each${total[$who]} ms (median $(median ${total[$who]})); above the restart it made${above[$who]} ms; that less the engine's wait for its own manager inside swarm init${rest[$who]} ms (median $(median ${rest[$who]}))" >> "$OUT"
  done
  exit 0
fi

# First apply, five times from the unconverged host, beside the floor of the last (the commands
# it ran, each run alone afterwards; the engine's swarm init is an API call, not in the floor).
# Each run is followed by one with --serial (one resource at a time) from the same state: the
# overlap's gain, measured back to back.
# Docker's restart inside each first apply is timed by the stand-in (from its start to the engine
# answering again): the apply's time above it is what the apply adds to its restart.
# The engine's wait for its own manager inside each swarm init is read from its log (floor.py
# swarm-wait): the part of the apply above its restart that swarmkit's 500 ms health poll adds.
first=(); serial=(); above=(); own=(); waits=(); beyond=()
for i in 1 2 3 4 5; do
  [ "$i" = 1 ] || unconverge
  rm -f "$T/restart.began" "$T/restart.back"
  mark=$(wc -l < "$T/dockerd.log")
  start=$(date +%s%N)
  "$VAKT" apply -p "$P" --format json > "$T/first-apply.json" || { cat "$T/first-apply.json"; exit 1; }
  first+=("$(ms "$start" "$(date +%s%N)")")
  [ "$(wc -l < "$T/restart.back")" = 1 ] || { echo "the first apply did not restart Docker once"; exit 1; }
  above+=("$(( ${first[-1]} - $(ms "$(cat "$T/restart.began")" "$(cat "$T/restart.back")") ))")
  waits+=("$($FLOOR swarm-wait "$T/dockerd.log" "$mark")")
  beyond+=("$(( ${above[-1]} - ${waits[-1]} ))")
  own+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cpu_us"] // 1000)' "$T/first-apply.json")")
  unconverge
  start=$(date +%s%N)
  "$VAKT" apply -p "$P" -q --serial > /dev/null || exit 1
  serial+=("$(ms "$start" "$(date +%s%N)")")
done
# The engine's part of the floor: swarm init alone (the same request, through curl), three
# times, leaving the swarm before each.
init=(); init_waits=()
for i in 1 2 3; do
  curl -sf -X POST --unix-socket "$T/docker.sock" "http://d/swarm/leave?force=true" >/dev/null
  mark=$(wc -l < "$T/dockerd.log")
  start=$(date +%s%N)
  curl -sf -X POST --unix-socket "$T/docker.sock" -H 'Content-Type: application/json' \
    -d '{"AdvertiseAddr": "10.250.0.2", "ListenAddr": "0.0.0.0:2377"}' http://d/swarm/init >/dev/null
  init+=("$(ms "$start" "$(date +%s%N)")")
  init_waits+=("$($FLOOR swarm-wait "$T/dockerd.log" "$mark")")
done
# Docker's restart alone, three times, from the state the first apply restarts it in (out of
# the swarm): what the first apply is bounded by.
restart=()
for i in 1 2 3; do
  curl -sf -X POST --unix-socket "$T/docker.sock" "http://d/swarm/leave?force=true" >/dev/null || true
  start=$(date +%s%N); systemctl restart docker; restart+=("$(ms "$start" "$(date +%s%N)")")
done
"$VAKT" apply -p "$P" -q >/dev/null
nginx -c /etc/nginx/nginx.conf
peak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("peak_rss_kib"))' "$T/first-apply.json")
echo "first apply (firewall and nginx while Docker restarts for its daemon.json, then swarm init; the first from a fresh engine, then from the host unconverged): $(stats "${first[@]}"), vakt's peak RSS $peak KiB; floor: the commands but the restart (on its own line), re-run on the converged host (where ufw --force enable does less than from a disabled ufw: the firewall line below times it from the same state) $($FLOOR floor "$T/first-apply.json"), and swarm init through the API alone $(stats "${init[@]}")" >> "$OUT"
echo "first apply, each run: ${first[*]} ms; with --serial, each run after it: ${serial[*]} ms ($(stats "${serial[@]}"))" >> "$OUT"
echo "first apply beside Docker's restart alone ($(stats "${restart[@]}")): median $(median "${first[@]}") − $(median "${restart[@]}") = $(( $(median "${first[@]}") - $(median "${restart[@]}") )) ms above it (asked: at most 500)" >> "$OUT"
echo "first apply above the restart it made (each run's apply minus its own restart, timed by the stand-in; dockerd's stop alone varies by a second): ${above[*]} ms ($(stats "${above[@]}"); asked: at most 500)" >> "$OUT"
echo "of which the engine waited for its own manager inside swarm init (from its log; about 500 ms when swarmkit's first health poll comes before raft leads): ${waits[*]} ms; swarm init alone through curl waited ${init_waits[*]} ms; the rest above the restart: ${beyond[*]} ms ($(stats "${beyond[@]}"))" >> "$OUT"
echo "first apply, vakt's own CPU (all its threads; its commands, the engine's work and its waits for them not in it): ${own[*]} ms ($(stats "${own[@]}"))" >> "$OUT"

"$VAKT" check -p "$P" -q > "$T/check.txt" || { echo "check after apply:"; cat "$T/check.txt"; exit 1; }
hyperfine -N --warmup 3 --runs "$RUNS" --style basic --export-json "$T/check.json" \
  -n "check (firewall, docker, swarm, nginx, exposure)" "$VAKT check -p $P -q" \
  -n "check --only exposure" "$VAKT check -p $P -q --only exposure" \
  -n "check --only firewall" "$VAKT check -p $P -q --only firewall" \
  -n "check --only docker,swarm" "$VAKT check -p $P -q --only docker,swarm" \
  -n "check --only nginx (with nginx -t)" "$VAKT check -p $P -q --only nginx" \
  -n "apply, no-op" "$VAKT apply -p $P -q" > "$T/hyperfine.txt"
# The floor beside each: the commands that run made, each run alone (engine API calls aside).
"$VAKT" check -p "$P" --format json > "$T/floor-check.json" || true
"$VAKT" check -p "$P" --only exposure --format json > "$T/floor-exposure.json" || true
"$VAKT" check -p "$P" --only firewall --format json > "$T/floor-firewall.json" || true
"$VAKT" check -p "$P" --only docker,swarm --format json > "$T/floor-docker.json" || true
"$VAKT" check -p "$P" --only nginx --format json > "$T/floor-nginx.json" || true
"$VAKT" apply -p "$P" --format json > "$T/floor-noop.json" || true
for f in check exposure firewall docker nginx noop; do $FLOOR floor "$T/floor-$f.json" > "$T/floor-$f.txt"; done
python3 - "$T/check.json" "$T" >> "$OUT" <<'PY'
import json, sys
floors = ["check", "exposure", "firewall", "docker", "nginx", "noop"]
for r, f in zip(json.load(open(sys.argv[1]))["results"], floors):
    t = sorted(r["times"])
    floor = open(f"{sys.argv[2]}/floor-{f}.txt").read().strip()
    print(f"{r['command']}: min {t[0]*1000:.1f} / median {r['median']*1000:.1f} / max {t[-1]*1000:.1f} ms ({len(t)} runs); floor {floor}")
PY

# Peak RSS, five runs each: vakt's own (its report's peak_rss_kib, VmHWM), and the process
# tree's (wait4's ru_maxrss: vakt or the largest command it waited for).
echo "peak RSS, check: vakt $($FLOOR peak-self "$VAKT" check -p "$P"); with its commands $($FLOOR peak "$VAKT" check -p "$P" -q)" >> "$OUT"
echo "peak RSS, no-op apply: vakt $($FLOOR peak-self "$VAKT" apply -p "$P"); with its commands $($FLOOR peak "$VAKT" apply -p "$P" -q)" >> "$OUT"

# CPU per converged check, vakt with the commands it runs (bash's `times` of its children)
# and dockerd answering it: on two cores the check's time is bound by their sum.
dockerd_ticks() { awk '{print $14+$15}' "/proc/$(cat "$T/docker.pid")/stat"; }
d0=$(dockerd_ticks)
cpu=$(bash -c "for i in \$(seq 20); do $VAKT check -p $P -q >/dev/null; done; times" | tail -n1)
d1=$(dockerd_ticks)
python3 - "$cpu" "$d0" "$d1" "$(getconf CLK_TCK)" >> "$OUT" <<'PY'
import re, sys
user, sys_ = (float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", sys.argv[1]))
dockerd = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"check, CPU per run (20 runs): vakt and its commands {(user + sys_) / 20 * 1000:.1f} ms "
      f"(user {user / 20 * 1000:.1f}, sys {sys_ / 20 * 1000:.1f}), dockerd {dockerd / 20 * 1000:.1f} ms")
PY

# Remediation of one drift: a rule deleted by hand, five times. vakt's apply beside its floor,
# the one command it has to run (`ufw allow`, live), run alone from the same drifted state.
fix=(); alone=()
for i in 1 2 3 4 5; do
  ufw delete allow proto tcp from any to any port 80 >/dev/null
  start=$(date +%s%N); ufw allow proto tcp from any to any port 80 >/dev/null; alone+=("$(ms "$start" "$(date +%s%N)")")
  ufw delete allow proto tcp from any to any port 80 >/dev/null
  start=$(date +%s%N); "$VAKT" apply -p "$P" -q >/dev/null; fix+=("$(ms "$start" "$(date +%s%N)")")
done
echo "remediation, one deleted ufw rule (apply of the whole profile): $(stats "${fix[@]}"); floor: its ufw allow alone $(stats "${alone[@]}")" >> "$OUT"

# Remediation of a daemon.json label the operator changed and reloaded, five times: vakt writes
# the file back and reloads Docker (no restart). Its floor, from the same drifted state: the file
# put back by hand, the same `systemctl reload docker`, and /info asked until it shows the label.
label_on() { curl -sf --unix-socket "$T/docker.sock" http://d/info | grep -q "\"$1\""; }
drift_label() {
  sed 's/vakt=bench/vakt=drift/' "$T/daemon.json.converged" > /etc/docker/daemon.json; systemctl reload docker
  until label_on vakt=drift; do sleep 0.02; done
}
cp /etc/docker/daemon.json "$T/daemon.json.converged"
fix=(); alone=(); pid=$(cat "$T/docker.pid")
for i in 1 2 3 4 5; do
  drift_label
  start=$(date +%s%N); cp "$T/daemon.json.converged" /etc/docker/daemon.json; systemctl reload docker
  until label_on vakt=bench; do :; done; alone+=("$(ms "$start" "$(date +%s%N)")")
  drift_label
  start=$(date +%s%N); "$VAKT" apply -p "$P" -q >/dev/null; fix+=("$(ms "$start" "$(date +%s%N)")")
  label_on vakt=bench || { echo "the label was not remediated"; exit 1; }
done
[ "$(cat "$T/docker.pid")" = "$pid" ] || { echo "Docker was restarted for a label"; exit 1; }
echo "remediation, one daemon.json label changed and reloaded by hand (apply of the whole profile; Docker reloaded, not restarted): $(stats "${fix[@]}"); floor: the file put back, systemctl reload docker and /info until it shows the label $(stats "${alone[@]}")" >> "$OUT"

# The article's firewall on a fresh ufw state, five times each: plain ufw commands, then vakt
# (one write of each rule file and one `ufw --force enable`).
plain=(); mine=()
for i in 1 2 3 4 5; do
  fresh_ufw; start=$(date +%s%N)
  for p in 22 80 8080 2377; do ufw allow $p/tcp >/dev/null; done; ufw --force enable >/dev/null
  plain+=("$(ms "$start" "$(date +%s%N)")")
  fresh_ufw; start=$(date +%s%N)
  "$VAKT" apply -p "$P" -q --only firewall >/dev/null
  mine+=("$(ms "$start" "$(date +%s%N)")")
done
# The floor: the one command vakt had to run, alone, from the same state (rules in the files, ufw disabled).
enable=()
for i in 1 2 3 4 5; do
  ufw --force disable >/dev/null; start=$(date +%s%N); ufw --force enable >/dev/null; enable+=("$(ms "$start" "$(date +%s%N)")")
done
echo "plain ufw, 4 allows + enable: $(stats "${plain[@]}")" >> "$OUT"
echo "vakt apply --only firewall, same rules: $(stats "${mine[@]}"); floor: ufw --force enable alone $(stats "${enable[@]}")" >> "$OUT"
