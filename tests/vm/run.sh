#!/usr/bin/env bash
# The VM end-to-end test: boots a Debian 12 VM (systemd as PID 1, root on an emulated NVMe
# disk) under QEMU, with vakt's binary, units and a profile written into its image and
# vakt-provision.service enabled, exactly as after installing the package. The guest asserts
# first-boot provisioning, a no-op second run, the audit and the watchdog restart
# (tests/vm/guest.sh); the host probes the firewall through port forwards.
# The base image is cached under $VAKT_VM_CACHE (default /var/cache/vakt-vmtest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache_root=${VAKT_VM_CACHE:-/var/cache/vakt-vmtest}

if [ "$(id -u)" != 0 ]; then
  [ "${CI:-}" = true ] && { echo "vm test: needs root under CI" >&2; exit 1; }
  echo "vm test: skipped (needs root)"; exit 0
fi

install_tools() {
  command -v debootstrap >/dev/null && command -v qemu-system-x86_64 >/dev/null && command -v debugfs >/dev/null && return
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils debootstrap e2fsprogs >/dev/null 2>&1; then
    # A qemu-utils from bookworm-backports is already installed on some machines: take the
    # matching qemu-system-x86 from there, through a temporary source list on the machine's
    # own mirror.
    parts=$(mktemp -d)
    cp /etc/apt/sources.list.d/*.sources "$parts/" 2>/dev/null || true
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$("$here/apt-mirror.sh")" > "$parts/backports.sources"
    opts=(-o Dir::Etc::SourceParts="$parts" -o Dir::Etc::SourceList=/dev/null)
    apt-get "${opts[@]}" update -qq
    apt-get "${opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 debootstrap e2fsprogs >/dev/null
    rm -rf "$parts"
  fi
}
install_tools

key=$(cat "$here/build-image.sh" "$here/vmtest.service" | sha256sum | cut -c1-16)
image=$cache_root/$key
if [ ! -f "$image/base.raw" ]; then
  echo "vm test: building the base image (about 1-2 minutes)"
  "$here/build-image.sh" "$image"
fi

# The Debian package, as an operator would install it.
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
(cd "$top" && cargo deb --quiet >/dev/null)
deb=$(ls -t "$top"/target/debian/vakt_*.deb | head -n1)
work=$(mktemp -d)
trap 'kill "${qpid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
if dpkg-deb -c "$deb" | grep -q 'wants/'; then echo "FAIL: the package enables a unit"; exit 1; fi
echo "ok: $(basename "$deb") enables nothing on its own"

# The per-run root disk: a sparse copy of the base with the package's files written into it
# (dpkg -i without a dpkg run inside the image), the test profile over the packaged one, and
# the two units enabled as the operator would.
cp --sparse=always "$image/base.raw" "$work/root.raw"
{
  (cd "$work/pkg" && find . -mindepth 1 -type d | sort) | while read -r d; do echo "mkdir ${d#.}"; done
  (cd "$work/pkg" && find . -type f | sort) | while read -r f; do echo "write $work/pkg/${f#./} ${f#.}"; done
  echo "rm /etc/vakt/profile.toml"
  echo "write $here/profile.toml /etc/vakt/profile.toml"
  echo "symlink /etc/systemd/system/multi-user.target.wants/vakt-provision.service /lib/systemd/system/vakt-provision.service"
  echo "symlink /etc/systemd/system/multi-user.target.wants/vakt.service /lib/systemd/system/vakt.service"
} > "$work/inject.cmds"
debugfs -w -f "$work/inject.cmds" "$work/root.raw" >/dev/null 2>"$work/debugfs.err"
# debugfs writes files with the host file's mode; make sure the binary is executable.
echo "sif /usr/bin/vakt mode 0100755" | debugfs -w -f - "$work/root.raw" >/dev/null 2>&1

mkdir -p "$work/payload"
cp "$here/guest.sh" "$work/payload/"
mkfs.ext4 -q -F -d "$work/payload" "$work/payload.img" 64M

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p80=$(free_port); p99=$(free_port)
kernel_args="console=ttyS0 root=/dev/nvme0n1 rw panic=-1 net.ifnames=0"
timeout --kill-after=10 900 qemu-system-x86_64 -accel tcg -m 2048 -smp 2 -nodefaults -display none -monitor none \
  -serial "file:$work/console.log" -no-reboot -kernel "$image/vmlinuz" -append "$kernel_args" \
  -drive "file=$work/root.raw,if=none,id=d0,format=raw,cache=unsafe" -device nvme,drive=d0,serial=vakt0 \
  -drive "file=$work/payload.img,format=raw,if=virtio" \
  -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$p80-:80,hostfwd=tcp:127.0.0.1:$p99-:9999" \
  -device virtio-rng-pci &
qpid=$!
started=$(date +%s)

probe80="" probe99=""
while kill -0 $qpid 2>/dev/null; do
  if [ -z "$probe80" ] && grep -q "VAKT-VMTEST: probe now" "$work/console.log" 2>/dev/null; then
    probe80=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$p80/" || true)
    probe99=$(timeout 8 nc 127.0.0.1 "$p99" </dev/null 2>/dev/null || true)
  fi
  sleep 1
done
wait $qpid || true
elapsed=$(( $(date +%s) - started ))

grep -E "^(ok|FAIL|==)|VAKT-VMTEST" "$work/console.log" | tr -d '\r' || true
rc=$(debugfs -R "cat /rc" "$work/payload.img" 2>/dev/null | tr -d '[:space:]')
fails=0
[ "$rc" = 0 ] || { echo "FAIL: the guest reported ${rc:-no result}"; tail -n 60 "$work/console.log"; fails=1; }
[ "$probe80" = 502 ] && echo "ok: host -> guest port 80 (allowed) answers through the port forward (HTTP $probe80)" || { echo "FAIL: port 80 from the host: '$probe80'"; fails=1; }
case "$probe99" in
  *VAKT-BANNER*) echo "FAIL: port 9999 (not allowed) is reachable from the host"; fails=1 ;;
  *) echo "ok: host -> guest port 9999 (listening, not allowed) is unreachable" ;;
esac
echo "vm test: ${elapsed}s in the VM"
exit $fails
