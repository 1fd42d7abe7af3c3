#!/usr/bin/env bash
# Unpack Debian's proftpd (with mod_digest, which answers HASH/XSHA256) into .cache/proftpd
# without installing it: it conflicts with vsftpd as a package. The tests look for it there.
set -euo pipefail
dest="${1:-$(dirname "$0")/../../.cache/proftpd}"
[ -x "$dest/usr/sbin/proftpd" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq proftpd-core >/dev/null)
mkdir -p "$dest"
dpkg -x "$work"/proftpd-core_*.deb "$dest"
