#!/usr/bin/env bash
# The Vagrant stage: brings vagrant/Vagrantfile up for real with Debian's vagrant and
# vagrant-libvirt, on a box built here from the VM test's image (vagrant/box/build-box.sh),
# because no box registry is reachable, and under QEMU's emulation, because this kind of
# machine cannot run KVM guests. libvirtd, virtlogd, the management network's dnsmasq and its
# netfilter rules, QEMU and Vagrant all run in private mount, network and PID namespaces: the
# host's firewall, /var/lib and /run never see them, and everything dies with the namespace.
# Asserts: `vagrant up` runs every provisioner (NVMe at /var/lib/docker, the .deb installed,
# vakt apply, a compliant vakt check); `vagrant provision` again changes nothing; the audit's
# JSON read over `vagrant ssh`; `vagrant destroy -f` leaves no domain and no disk behind.
# Caches: the VM test's image under $VAKT_VM_CACHE (shared with tests/vm/run.sh), the box under
# $VAKT_VAGRANT_CACHE (default /var/cache/vakt-vagrant), both keyed by their inputs' hash.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

if [ "${1:-}" = --inside ]; then
  # ---- inside the namespaces (see the end of this file for how it is entered) ----
  work=$2 box=$3 deb=$4
  fails=0
  ok() { echo "ok: $*"; }
  fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
  now() { date +%s; }
  # A log with a prefix per line, without the upload's progress meter.
  show() { tr '\r' '\n' < "$2" | grep -v -e 'Progress: ' -e '^$' | sed "s/^/  $1| /"; }
  # Seconds since the command started, in front of each line of its output.
  stamp() { local start=$SECONDS l; while IFS= read -r l; do printf '%4ds %s\n' $((SECONDS - start)) "$l"; done; }

  # Private copies of everything libvirt writes: its configuration, its state, caches and
  # logs (overlays, so the host's /var stays as it was), /run for sockets and pid files, and
  # account files that have the user and groups its QEMU driver resolves at start.
  mount -t tmpfs tmpfs /run
  for d in /var/lib /var/log /var/cache; do
    mkdir -p "$work/ovl$d/up" "$work/ovl$d/wk"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$work/ovl$d/up,workdir=$work/ovl$d/wk" "$d"
  done
  mkdir -p /var/log/libvirt/qemu /var/lib/libvirt /var/cache/libvirt "$work/etc-libvirt"
  cp -a /etc/libvirt/. "$work/etc-libvirt/"
  mount --bind "$work/etc-libvirt" /etc/libvirt
  cat > /etc/libvirt/qemu.conf <<'EOF'
# Private test instance: QEMU runs as root on image paths under the test's work directory.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
EOF
  printf 'log_outputs = "3:file:%s/libvirtd.log"\n' "$work" > /etc/libvirt/libvirtd.conf
  cp /etc/passwd "$work/passwd"; cp /etc/group "$work/group"
  getent passwd libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:64055:libvirt qemu:/var/lib/libvirt:/usr/sbin/nologin' >> "$work/passwd"
  for g in libvirt-qemu:64055 kvm:64056 libvirt:64057; do
    getent group "${g%%:*}" >/dev/null || echo "${g%%:*}:x:${g#*:}:" >> "$work/group"
  done
  mount --bind "$work/passwd" /etc/passwd
  mount --bind "$work/group" /etc/group
  ip link set lo up

  virtlogd -d
  libvirtd -d
  export LIBVIRT_DEFAULT_URI=qemu:///system
  # libvirtd probes QEMU's capabilities before it answers; an earlier call ends in "end of file".
  for _ in $(seq 60); do virsh version >/dev/null 2>&1 && break; sleep 1; done
  virsh version >/dev/null || { echo "FAIL: libvirtd did not answer"; tail -n 30 "$work/libvirtd.log"; exit 1; }
  echo "ok: private libvirtd answers ($(virsh version | awk '/libvirt/ {print $NF; exit}'), QEMU $(virsh version | awk '/hypervisor/ {print $NF}'))"

  export VAGRANT_HOME=$work/vagrant.d VAGRANT_DOTFILE_PATH=$work/dot VAGRANT_CWD=$top/vagrant
  export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 VAGRANT_DEFAULT_PROVIDER=libvirt
  export VAKT_VAGRANT_BOX=vakt/debian12-local VAKT_VAGRANT_DRIVER=qemu VAKT_DEB=$deb
  nvme=$VAGRANT_DOTFILE_PATH/vakt-nvme.qcow2

  # On a failure past this point the domain goes too; the namespace takes everything else.
  trap 'vagrant destroy -f >/dev/null 2>&1 || true' EXIT

  vagrant box add --name "$VAKT_VAGRANT_BOX" "$box" >"$work/box-add.log" 2>&1 \
    || { cat "$work/box-add.log"; exit 1; }

  # The guest's serial console, read from its pty once the domain exists (this process dies
  # with the namespace), shown when the VM does not come up.
  ( for _ in $(seq 600); do
      tty=$(virsh ttyconsole vagrant_default 2>/dev/null) && [ -n "$tty" ] && exec cat "$tty" >"$work/console.log" 2>&1
      sleep 1
    done ) &
  t=$(now)
  rc=0; vagrant up --provider=libvirt 2>&1 | stamp >"$work/up.log" || rc=$?
  up_s=$(( $(now) - t ))
  show up "$work/up.log"
  if [ $rc != 0 ]; then
    fail "vagrant up: exit $rc after ${up_s}s; the guest's console ends:"
    tail -n 40 "$work/console.log" 2>/dev/null | tr -d '\r' | sed 's/^/  console| /'
    exit 1
  fi
  ok "vagrant up: exit 0 in ${up_s}s"
  grep -q " default: /dev/nvme0n1 /var/lib/docker$" "$work/up.log" \
    && ok "provisioner mounted the NVMe disk at /var/lib/docker" || fail "no NVMe mount at /var/lib/docker in the provisioner's output"
  # The package's version without its Debian revision is what `vakt --version` prints.
  version=$(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')
  grep -qF "default: vakt $version" "$work/up.log" \
    && ok "provisioner installed $(basename "$deb") (vakt $version)" || fail "the installed vakt is not $version"
  changed=$(sed -n 's/.*default: summary: [0-9]* ok, \([0-9]*\) changed.*/\1/p' "$work/up.log" | head -n1)
  [ "${changed:-0}" -gt 0 ] && ok "first vakt apply changed $changed things" || fail "first vakt apply changed nothing (or printed no summary)"
  grep -q "default: vakt check: compliant (exit 0)" "$work/up.log" \
    && ok "provisioner's vakt check: compliant" || fail "provisioner's vakt check was not compliant"
  [ -f "$nvme" ] && ok "the trigger created the NVMe image" || fail "no NVMe image at $nvme"

  t=$(now)
  rc=0; vagrant provision 2>&1 | stamp >"$work/provision.log" || rc=$?
  prov_s=$(( $(now) - t ))
  show provision "$work/provision.log"
  [ $rc = 0 ] && ok "vagrant provision: exit 0 in ${prov_s}s" || fail "vagrant provision: exit $rc after ${prov_s}s"
  again=$(sed -n 's/.*default: summary: [0-9]* ok, \([0-9]*\) changed, \([0-9]*\) drift, \([0-9]*\) failed.*/\1 \2 \3/p' "$work/provision.log" | head -n1)
  [ "$again" = "0 0 0" ] && ok "re-apply: 0 changed, 0 drift, 0 failed" || fail "re-apply summary (changed drift failed): '${again}'"
  grep -q "default: vakt check: compliant (exit 0)" "$work/provision.log" \
    && ok "re-provisioned vakt check: compliant" || fail "re-provisioned vakt check was not compliant"

  rc=0; vagrant ssh -c 'sudo vakt check --format json' >"$work/check.json" 2>"$work/ssh.err" || rc=$?
  [ $rc = 0 ] && ok "vagrant ssh -c 'sudo vakt check --format json': exit 0" || { fail "vakt check over ssh: exit $rc"; cat "$work/ssh.err"; }
  if python3 - "$work/check.json" <<'PY'; then ok "check JSON: every finding passes, on qemu, Docker data on NVMe"; else fail "check JSON (above)"; cat "$work/check.json"; fi
import json, sys
r = json.load(open(sys.argv[1]))
problems = []
def want(cond, what):
    if not cond:
        problems.append(what)
want(r.get("schema") == 1 and r.get("command") == "check", "schema 1 check report")
s = r.get("summary", {})
want(s.get("ok", 0) > 0, "some findings pass")
for k in ("changed", "drift", "failed", "unknown"):
    want(s.get(k) == 0, f"summary.{k} == 0 (is {s.get(k)})")
findings = [f for res in r.get("resources", []) for f in res.get("findings", [])]
bad = [f for f in findings if f.get("status") != "ok"]
want(not bad, "no finding other than ok: " + ", ".join(str(f.get("id")) for f in bad))
by_id = {f.get("id"): f for f in findings}
hv = by_id.get("host.hypervisor", {})
want(hv.get("status") == "ok" and "hypervisor is qemu" in hv.get("title", ""), f"host.hypervisor: qemu (emulation), ok: {hv}")
st = by_id.get("host.storage:/var/lib/docker", {})
want(st.get("status") == "ok" and any("/dev/nvme0n1" in e for e in st.get("evidence", [])),
     f"host.storage:/var/lib/docker: ok, on /dev/nvme0n1: {st}")
want(by_id.get("swarm.node", {}).get("status") == "ok", "swarm.node ok")
want("/etc/vakt/profile.d/50-vagrant.toml" in r.get("profile", ""), "the profile includes the Vagrantfile's drop-in: " + r.get("profile", ""))
for p in problems:
    print("  check JSON:", p)
sys.exit(1 if problems else 0)
PY
  rc=0; out=$(vagrant ssh -c 'findmnt -no SOURCE,FSTYPE /var/lib/docker; tr -d " " < /sys/block/nvme0n1/device/serial; systemctl is-active docker; sudo docker info --format "{{.Driver}} {{.DockerRootDir}} {{.Swarm.LocalNodeState}}"; sudo ufw status | head -n1' 2>/dev/null | tr -d '\r') || rc=$?
  echo "$out" | sed 's/^/  guest| /'
  [ "$out" = "$(printf '/dev/nvme0n1 ext4\nvakt-nvme0\nactive\noverlay2 /var/lib/docker active\nStatus: active')" ] \
    && ok "guest: Docker on overlay2 in /var/lib/docker on the NVMe disk, swarm active, ufw active" || fail "guest state (rc $rc) differs"

  trap - EXIT
  t=$(now)
  rc=0; vagrant destroy -f >"$work/destroy.log" 2>&1 || rc=$?
  destroy_s=$(( $(now) - t ))
  [ $rc = 0 ] && ok "vagrant destroy -f: exit 0 in ${destroy_s}s" || { fail "vagrant destroy -f: exit $rc"; cat "$work/destroy.log"; }
  [ -z "$(virsh list --all --name | tr -d '[:space:]')" ] && ok "no libvirt domain left" || fail "domains left: $(virsh list --all --name)"
  [ ! -e "$nvme" ] && ok "the NVMe image is gone" || fail "the NVMe image is still there"
  echo "vagrant timings: up ${up_s}s, provision ${prov_s}s, destroy ${destroy_s}s"
  exit $fails
fi

# ---- on the host ----
stage_start=$(date +%s)
if [ "$(id -u)" != 0 ]; then
  [ "${CI:-}" = true ] && { echo "vagrant test: needs root under CI" >&2; exit 1; }
  echo "vagrant test: skipped (needs root)"; exit 0
fi

# Debian's packages, installed when missing, with service starts denied (the test starts its
# own daemons): a policy-rc.d that exists is used as it is; one made here is removed again.
packages=(vagrant vagrant-libvirt libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base
  qemu-system-x86 qemu-utils debootstrap e2fsprogs iptables iproute2 util-linux python3 openssh-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^.i' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vagrant test: installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d created= rc=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; created=1; fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  if [ -n "$created" ]; then rm -f "$policy"; fi
  [ $rc = 0 ] || { echo "vagrant test: installing packages failed" >&2; exit 1; }
fi

# The VM test's image, under the same cache key as tests/vm/run.sh gives it.
image=${VAKT_VM_CACHE:-/var/cache/vakt-vmtest}/$(cat "$top/tests/vm/build-image.sh" "$top/tests/vm/vmtest.service" | sha256sum | cut -c1-16)
t=$(date +%s)
if [ ! -f "$image/base.raw" ]; then
  echo "vagrant test: building the VM test's base image"
  "$top/tests/vm/build-image.sh" "$image"
fi
pubkey=$(dpkg -L vagrant | grep '/keys/vagrant\.pub$' | head -n1)
boxkey=$( { echo "$image"; cat "$top/vagrant/box/build-box.sh" "$top/vagrant/box/Vagrantfile" "$pubkey"; } | sha256sum | cut -c1-16)
box=${VAKT_VAGRANT_CACHE:-/var/cache/vakt-vagrant}/$boxkey/vakt-debian12.box
if [ ! -f "$box" ]; then
  echo "vagrant test: building the box"
  "$top/vagrant/box/build-box.sh" "$image" "$box"
fi
box_s=$(( $(date +%s) - t ))

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
deb=$("$top/dist/build-deb.sh" | tail -n 1)

work=$(mktemp -d)
upid=
cleanup() {
  # unshare --kill-child: the namespace's first process dies with unshare, and with it every
  # process in the PID namespace (libvirtd, virtlogd, dnsmasq, QEMU, Vagrant); the mount and
  # network namespaces go with their last process. unshare blocks SIGTERM and SIGINT while it
  # waits, so it gets SIGKILL: its only child is `timeout`'s.
  if [ -n "$upid" ]; then
    for c in $(cat "/proc/$upid/task/$upid/children" 2>/dev/null); do kill -KILL "$c" 2>/dev/null || true; done
    wait "$upid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# With a trap, `wait` returns at once on these signals (and the EXIT trap runs).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
t=$(date +%s)
rc=0
timeout --signal=KILL 900 unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private \
  "$here/run.sh" --inside "$work" "$box" "$deb" &
upid=$!
wait "$upid" || rc=$?
upid=
vm_s=$(( $(date +%s) - t ))
if [ $rc != 0 ]; then
  # Its ethtool complaints about interfaces the namespace does not have are harmless.
  echo "vagrant test: FAILED (exit $rc); the private libvirtd's log ends:"
  grep -v 'ethtool ioctl error' "$work/libvirtd.log" 2>/dev/null | tail -n 20 || true
fi
echo "vagrant test: image+box ${box_s}s, namespaces (libvirt, vagrant up/provision/ssh/destroy) ${vm_s}s, whole stage $(( $(date +%s) - stage_start ))s"
exit $rc
