#!/usr/bin/env bash
# Builds the VM test's base image: Debian 12 (systemd, ufw, nginx, docker.io, iptables) on an
# ext4 root for an emulated NVMe disk, and the Debian cloud kernel to boot it with.
# Usage: build-image.sh OUTDIR   (writes OUTDIR/base.raw and OUTDIR/vmlinuz)
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mirror=$("$here/apt-mirror.sh")

# The kernel: the ABI package behind linux-image-cloud-amd64, unpacked, not installed.
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
(cd "$work" && apt-get download "$kpkg" >/dev/null)
dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")

rootfs=$work/rootfs
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,udev,dbus,kmod,iproute2,procps,ufw,nginx,docker.io,iptables,curl,netcat-openbsd,util-linux \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
mkdir -p "$rootfs/usr/lib/modules"
cp -a "$work/kernel/lib/modules/$kver" "$rootfs/usr/lib/modules/"
chroot "$rootfs" depmod "$kver"

echo vakt-vm > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vakt-vm\n' > "$rootfs/etc/hosts"
echo 'root:vakt' | chroot "$rootfs" chpasswd
mkdir -p "$rootfs/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n# The isolated QEMU user network offers no router: a default route as on a real server.\nGateway=10.0.2.2\n' > "$rootfs/etc/systemd/network/10-eth0.network"
chroot "$rootfs" systemctl enable systemd-networkd systemd-networkd-wait-online >/dev/null 2>&1
install -m 644 "$here/vmtest.service" "$rootfs/etc/systemd/system/vmtest.service"
chroot "$rootfs" systemctl enable vmtest.service >/dev/null 2>&1
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*

mkdir -p "$out"
mkfs.ext4 -q -F -L vmroot -d "$rootfs" "$out/base.raw.tmp" 4G
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
mv "$out/base.raw.tmp" "$out/base.raw"
echo "built $out/base.raw (kernel $kver)"
