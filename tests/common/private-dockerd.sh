#!/bin/sh
# Runs a test or bench dockerd in the foreground with every path it writes kept private: data
# root, exec root, socket and pid file under T, and /run and /etc in a mount namespace of its
# own. dockerd 20.10 writes its trust key to /etc/docker/key.json (creating /etc/docker) whatever
# --config-file says, so /etc is an overlay whose writes land on a tmpfs that ends with the
# namespace; /etc/docker is removed from that view so the engine always starts as on a machine
# that never had one, whatever the developer's machine holds.
# Usage: private-dockerd.sh T   (configuration: T/etc/docker/daemon.json)
set -eu
exec unshare -m --propagation private sh -ec '
T=$0
mount -t tmpfs tmpfs /run
mkdir -p /run/docker /run/vakt-etc/upper /run/vakt-etc/work
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/vakt-etc/upper,workdir=/run/vakt-etc/work /etc
# Only ever remove /etc/docker from the overlay: the real directory stays as it is.
grep -q "^overlay /etc overlay " /proc/self/mounts
rm -rf /etc/docker
exec dockerd --data-root "$T/data" --exec-root "$T/exec" --pidfile "$T/docker.pid" \
  --host "unix://$T/docker.sock" --config-file "$T/etc/docker/daemon.json" --iptables="${VAKT_DOCKERD_IPTABLES:-false}"
' "$1"
