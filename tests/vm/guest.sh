#!/bin/sh
# Runs inside the test VM after the first boot (vmtest.service): asserts what first-boot
# provisioning did, re-runs it, audits, and makes the watchdog hang to see systemd restart it.
# Each check prints "ok: ..." or "FAIL: ..."; the exit code is the number of failures.
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
check() { desc=$1; shift; if "$@" >/dev/null 2>&1; then ok "$desc"; else fail "$desc"; fi; }
SAMPLE_ID=8b0e3c7a52f44f6f9a1d6c0e4b2a7d11
SUMMARY_ID=8b0e3c7a52f44f6f9a1d6c0e4b2a7d12

echo "== first boot"
ip -br addr; ip route; networkctl --no-pager status eth0 2>&1 | head -20
result=$(systemctl show -p Result --value vakt-provision.service)
active=$(systemctl show -p ActiveState --value vakt-provision.service)
[ "$result/$active" = "success/active" ] && ok "vakt-provision.service succeeded" || { fail "vakt-provision.service: $result/$active"; journalctl -u vakt-provision --no-pager | tail -40; }
check "run-once marker written" test -f /var/lib/vakt/provisioned
status=$(ufw status verbose)
echo "$status" | grep -q "Status: active" && ok "ufw active" || fail "ufw not active"
for p in 22/tcp 80/tcp 8080/tcp 2377/tcp; do
  echo "$status" | grep -q "^$p " && ok "ufw allows $p" || fail "ufw lacks $p"
done
check "daemon.json holds overlay2" grep -q '"storage-driver": "overlay2"' /etc/docker/daemon.json
driver=$(docker info --format '{{.Driver}}')
[ "$driver" = overlay2 ] && ok "Docker runs on overlay2" || fail "Docker runs on $driver"
swarm=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.NodeAddr}} {{.Swarm.ControlAvailable}}')
[ "$swarm" = "active 10.0.2.15 true" ] && ok "swarm manager advertising 10.0.2.15" || fail "swarm: $swarm"
check "nginx.conf is vakt's" grep -q "Managed by vakt" /etc/nginx/nginx.conf
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/)
[ "$code" = 502 ] && ok "nginx proxies to the (absent) gateway: 502" || fail "nginx answered $code"
check "sysctl persisted" grep -q "net.ipv4.ip_forward = 1" /etc/sysctl.d/60-vakt.conf
sched=$(cat /sys/block/nvme0n1/queue/scheduler)
echo "$sched" | grep -qE '(^|\[)none(\]|$)' && ok "nvme0n1 scheduler none" || fail "nvme0n1 scheduler: $sched"

echo "== a second run changes nothing"
systemctl restart vakt-provision.service
[ "$(systemctl show -p ConditionResult --value vakt-provision.service)" = no ] && ok "the marker skips a second provisioning" || fail "provisioning ran again"
vakt apply --format json > /tmp/again.json; rc=$?
changed=$(grep -c '"status": "changed"' /tmp/again.json)
[ $rc = 0 ] && [ "$changed" = 0 ] && ok "re-apply: exit 0, nothing changed" || { fail "re-apply: rc $rc, $changed changed"; cat /tmp/again.json; }
# Observation runs read-only commands (dpkg-query, nginx -t); nothing else may run.
if sed -n '/"commands"/,/]/p' /tmp/again.json | grep -qE '"(ufw|systemctl|apt-get|docker|nginx -s)'; then
  fail "re-apply ran a command that changes state: $(sed -n '/"commands"/,/]/p' /tmp/again.json)"
else
  ok "re-apply ran no command that changes state"
fi

echo "== audit"
vakt check > /tmp/check.txt; rc=$?
[ $rc = 0 ] && ok "vakt check exits 0" || { fail "vakt check exit $rc"; cat /tmp/check.txt; }
vakt check --format json --only host > /tmp/host.json
grep -q '"title": "/ is on nvme storage' /tmp/host.json && ok "root disk reported as nvme" || fail "root disk: $(grep storage /tmp/host.json)"
grep -q 'QEMU NVMe Ctrl' /tmp/host.json && ok "the NVMe model is in the evidence" || fail "no NVMe model in evidence"
virt=$(systemd-detect-virt --vm)
grep -q "\"title\": \"hypervisor is $virt " /tmp/host.json && ok "hypervisor reported as $virt, as systemd-detect-virt says" || fail "hypervisor: $(grep 'hypervisor is' /tmp/host.json)"
vakt check -p builtin:openfaas-swarm --only host --format json > /tmp/article.json
if [ "$virt" = kvm ]; then
  ok "(running under KVM: the article's profile passes)"
else
  grep -A2 '"id": "host.hypervisor"' /tmp/article.json | grep -q '"status": "drift"' && ok "the article's profile reports $virt as drift (it wants kvm)" || fail "article profile: $(grep -A2 host.hypervisor /tmp/article.json)"
fi

echo "== watchdog"
[ "$(systemctl is-active vakt.service)" = active ] && ok "vakt.service active" || { fail "vakt.service $(systemctl is-active vakt.service)"; journalctl -u vakt --no-pager | tail -20; }
st=$(systemctl show -p StatusText --value vakt.service)
echo "$st" | grep -q "steal .*iowait" && ok "StatusText: $st" || fail "StatusText: $st"
sleep 6
journalctl -o json --no-pager MESSAGE_ID=$SUMMARY_ID > /tmp/events.json
grep -q '"VAKT_STEAL_PCT"' /tmp/events.json && grep -q '"VAKT_IOWAIT_PCT"' /tmp/events.json && ok "journald events carry VAKT_* fields" || fail "no VAKT_* fields in the journal"
curl -s http://127.0.0.1:9477/metrics | grep -q '^vakt_cpu_steal_ratio ' && ok "metrics endpoint serves vakt_cpu_steal_ratio" || fail "no metrics"

# Stall the sampler: /proc/stat becomes a FIFO that answers twice, then hangs like a stuck
# kernel interface. systemd must kill the unit for missing its watchdog and restart it.
mkdir -p /run/vakt-stall/proc
mkfifo /run/vakt-stall/proc/stat
mkdir -p /run/systemd/system/vakt.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/bin/vakt --root /run/vakt-stall watch -p /etc/vakt/profile.toml\nWatchdogSec=3s\nTimeoutStartSec=10s\n' > /run/systemd/system/vakt.service.d/stall.conf
systemctl daemon-reload
( for i in 1 2; do head -n 3 /proc/stat > /run/vakt-stall/proc/stat; sleep 0.3; done ) &
before=$(systemctl show -p NRestarts --value vakt.service)
systemctl restart vakt.service
for i in $(seq 1 30); do
  n=$(systemctl show -p NRestarts --value vakt.service)
  [ "$n" -gt "$before" ] && break
  sleep 1
done
[ "$n" -gt "$before" ] && ok "a stalled sampler was killed and restarted by systemd (NRestarts $before -> $n)" || fail "no restart (NRestarts $n)"
journalctl -u vakt --no-pager | grep -q -i "watchdog timeout" && ok "the journal says: watchdog timeout" || fail "no watchdog timeout in the journal"
rm -rf /run/systemd/system/vakt.service.d; systemctl daemon-reload; systemctl restart vakt.service

# From the host, through port forwards: 80 answers, 9999 (listening, not allowed) does not.
( while :; do echo VAKT-BANNER | nc -l -p 9999 -q 1 >/dev/null 2>&1; done & echo $! > /tmp/nc.pid )
sleep 1
echo | nc -w 3 127.0.0.1 9999 | grep -q VAKT-BANNER && ok "port 9999 has a listener (seen from inside)" || fail "no listener on 9999"
echo "VAKT-VMTEST: probe now"
sleep 25
kill "$(cat /tmp/nc.pid)" 2>/dev/null
echo "VAKT-VMTEST: done with $fails failures"
exit $fails
