#!/usr/bin/env bash
# Builds a libvirt Vagrant box from the VM test's Debian 12 image (tests/vm/build-image.sh):
# the vagrant user with Vagrant's well-known insecure key, sudo without a password, sshd with
# host keys made on first boot, DHCP on the first NIC, and an initramfs so that the root file
# system can sit on a virtio disk. The image has no bootloader: the box's own Vagrantfile
# (next to this script) has libvirt boot the kernel and initramfs carried in the box.
# Usage: build-box.sh IMAGE_DIR OUT.box   (IMAGE_DIR holds base.raw and vmlinuz)
# Needs root (a loop mount in a private mount namespace), qemu-img, and the vagrant package
# for its insecure public key.
set -euo pipefail
image=$(cd "$1" && pwd)
out=$2
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

[ -f "$image/base.raw" ] && [ -f "$image/vmlinuz" ] || { echo "build-box: $image lacks base.raw or vmlinuz" >&2; exit 1; }
pubkey=$(dpkg -L vagrant 2>/dev/null | grep '/keys/vagrant\.pub$' | head -n1)
[ -n "$pubkey" ] || { echo "build-box: Vagrant's insecure key not found: install the vagrant package" >&2; exit 1; }
mirror=$("$top/tests/vm/apt-mirror.sh")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp --sparse=always "$image/base.raw" "$work/root.raw"
# mkinitramfs reads the kernel's config (which compressors it can unpack); the image has the
# kernel's modules but not its /boot, so take the config from the same package, fetched as
# build-image.sh fetches it (the machine's apt sources: kernels come from the security suite).
kver=$(debugfs -R "ls -p /usr/lib/modules" "$work/root.raw" 2>/dev/null | awk -F/ '$6 ~ /^[0-9]/ {print $6; exit}')
[ -n "$kver" ] || { echo "build-box: no kernel modules in the image" >&2; exit 1; }
(cd "$work" && apt-get download "linux-image-$kver" >/dev/null 2>&1 && dpkg-deb -x linux-image-"$kver"_*.deb kernel)
mkdir "$work/root" "$work/box"

# Everything that touches the image runs in a private mount namespace: its mounts vanish with
# it even if a step fails half-way, and the host's mount table never sees them.
cat > "$work/inner.sh" <<'INNER'
set -euo pipefail
work=$1 mirror=$2 pubkey=$3
r=$work/root
mount -o loop "$work/root.raw" "$r"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/tmp"
# apt inside the image resolves the mirror with the host's resolver; the image's own file is
# put back afterwards.
if [ -e "$r/etc/resolv.conf" ] || [ -L "$r/etc/resolv.conf" ]; then mv "$r/etc/resolv.conf" "$work/resolv.conf.image"; fi
cp -L /etc/resolv.conf "$r/etc/resolv.conf"
# No service may start inside the chroot (it would start on the host's kernel).
policy_created=
if [ ! -e "$r/usr/sbin/policy-rc.d" ]; then printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 755 "$r/usr/sbin/policy-rc.d"; policy_created=1; fi
echo "deb $mirror bookworm main" > "$r/etc/apt/sources.list"

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
chroot "$r" apt-get update -qq
chroot "$r" apt-get install -y -qq --no-install-recommends openssh-server sudo initramfs-tools >"$work/apt.log" 2>&1 \
  || { tail -n 30 "$work/apt.log"; exit 1; }

kver=$(ls "$r/usr/lib/modules")
cp "$work/kernel/boot/config-$kver" "$r/boot/"
echo COMPRESS=gzip > "$r/etc/initramfs-tools/conf.d/compress"
# MODULES=most: the disk may be virtio, SCSI or SATA; the box does not know its bus.
chroot "$r" mkinitramfs -o /tmp/initrd.img "$kver"
cp "$r/tmp/initrd.img" "$work/box/initrd.img"

# The vagrant user, as every box has it: key-based login with the insecure key (Vagrant
# replaces it on first `vagrant up`), password "vagrant", sudo without a password.
chroot "$r" useradd --create-home --shell /bin/bash --user-group vagrant
echo 'vagrant:vagrant' | chroot "$r" chpasswd
install -d -m 700 -o 1000 -g 1000 "$r/home/vagrant/.ssh"
install -m 600 "$pubkey" "$r/home/vagrant/.ssh/authorized_keys"
chroot "$r" chown -R vagrant:vagrant /home/vagrant/.ssh
printf 'Defaults:vagrant !requiretty\nvagrant ALL=(ALL) NOPASSWD: ALL\n' > "$r/etc/sudoers.d/vagrant"
chmod 440 "$r/etc/sudoers.d/vagrant"
chroot "$r" visudo -cq

# Every VM from the box gets its own sshd host keys and machine id on first boot.
rm -f "$r"/etc/ssh/ssh_host_*
cat > "$r/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
UNIT
chroot "$r" systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1
: > "$r/etc/machine-id"

# The VM test's runner unit (it mounts /dev/vda, a payload disk there but the root disk
# here, and powers off) and its isolated-network route have no place in a box.
for u in "$r"/etc/systemd/system/vmtest*.service; do
  [ -e "$u" ] || continue
  chroot "$r" systemctl disable "$(basename "$u")" >/dev/null 2>&1 || true
  rm -f "$u"
done
rm -f "$r"/etc/systemd/network/*.network
printf '[Match]\nName=eth* en*\n\n[Network]\nDHCP=ipv4\n' > "$r/etc/systemd/network/10-dhcp.network"
echo 'LABEL=vmroot / ext4 defaults 0 1' > "$r/etc/fstab"

chroot "$r" apt-get clean
rm -rf "$r/var/lib/apt/lists/"* "$r/boot/initrd.img"*
rm -f "$r/etc/resolv.conf"
if [ -e "$work/resolv.conf.image" ] || [ -L "$work/resolv.conf.image" ]; then mv "$work/resolv.conf.image" "$r/etc/resolv.conf"; fi
if [ -n "$policy_created" ]; then rm -f "$r/usr/sbin/policy-rc.d"; fi
umount "$r/tmp"
umount -R "$r/dev"
umount "$r/proc"
# Hand freed blocks back to the sparse file so that the qcow2 stays small.
fstrim "$r" 2>/dev/null || true
umount "$r"
INNER
unshare --mount --propagation private bash "$work/inner.sh" "$work" "$mirror" "$pubkey" </dev/null

e2fsck -fy "$work/root.raw" >/dev/null 2>&1 || [ $? -le 1 ]
qemu-img convert -O qcow2 "$work/root.raw" "$work/box/box.img"
size_gb=$(( ($(stat -c %s "$work/root.raw") + (1 << 30) - 1) >> 30 ))
printf '{\n  "provider": "libvirt",\n  "format": "qcow2",\n  "virtual_size": %d\n}\n' "$size_gb" > "$work/box/metadata.json"
cp "$image/vmlinuz" "$work/box/vmlinuz"
cp "$here/Vagrantfile" "$work/box/Vagrantfile"
mkdir -p "$(dirname "$out")"
# Uncompressed: the qcow2 holds mostly binaries, and gzip would cost a minute on two cores.
tar -C "$work/box" -cf "$out.tmp" metadata.json Vagrantfile box.img vmlinuz initrd.img
mv "$out.tmp" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
