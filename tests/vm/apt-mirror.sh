#!/bin/sh
# Prints the Debian mirror this machine's own apt sources use (deb822 `URIs:` or a one-line
# `deb` entry, security archives left out): the VM test names no mirror of its own.
set -eu
m=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | cut -d' ' -f1)
[ -n "$m" ] || m=$(awk '/^deb / && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null)
[ -n "$m" ] || { echo "no Debian mirror found in this machine's apt sources" >&2; exit 1; }
echo "$m"
