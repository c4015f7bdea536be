#!/usr/bin/env bash
# Builds the VM test's base image: Debian 12 (systemd, ufw, nginx, docker.io, iptables, and
# apparmor: the cloud kernel enables AppArmor, and Docker then loads its profile for every
# container, as on Ubuntu) on an ext4 root that boots from an emulated NVMe disk or a virtio
# disk, the Debian cloud kernel, and an initramfs. The cloud kernel has NVMe built in but
# virtio_blk as a module, so a virtio root (what most KVM guests see) needs the initramfs to
# load it; an NVMe root boots with or without it.
# Usage: build-image.sh OUTDIR   (writes OUTDIR/base.raw, OUTDIR/vmlinuz and OUTDIR/initrd.img)
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
  --include=systemd,systemd-sysv,udev,dbus,kmod,iproute2,procps,ufw,nginx,docker.io,iptables,curl,netcat-openbsd,util-linux,initramfs-tools,apparmor \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
mkdir -p "$rootfs/usr/lib/modules"
cp -a "$work/kernel/lib/modules/$kver" "$rootfs/usr/lib/modules/"
chroot "$rootfs" depmod "$kver"

# The initramfs, made by Debian's own tool in the image: only the modules a virtio root needs
# (a small image unpacks quickly under emulation), gzip so no extra compressor is needed.
cp "$work/kernel/boot/config-$kver" "$rootfs/boot/"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$rootfs/etc/initramfs-tools/conf.d/vakt-vmtest.conf"
printf 'virtio_pci\nvirtio_blk\n' >> "$rootfs/etc/initramfs-tools/modules"
chroot "$rootfs" mkinitramfs -o /tmp/initrd.img "$kver" >"$work/mkinitramfs.log" 2>&1 || { tail -20 "$work/mkinitramfs.log"; exit 1; }
mv "$rootfs/tmp/initrd.img" "$work/initrd.img"

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
cp "$work/initrd.img" "$out/initrd.img"
mv "$out/base.raw.tmp" "$out/base.raw"
echo "built $out/base.raw (kernel $kver)"
