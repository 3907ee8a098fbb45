#!/usr/bin/env bash
# Install Debian packages for a script that found a tool missing (chromium.sh, postgres.sh).
# When that cannot be done it says why in one line on stderr and exits non-zero, so the caller
# stops there rather than failing later on a missing binary.
# Usage: scripts/apt_install.sh PACKAGE...
set -euo pipefail
packages="$*"
fail() { echo "cannot install $packages: $1" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "apt-get needs root (run this as root)"
command -v apt-get >/dev/null || fail "no apt-get on this machine"
echo "installing $packages (apt-get)" >&2
# A fresh machine's package lists are empty or stale: without an update the install finds nothing.
apt-get update -qq >&2 || fail "apt-get update failed"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || fail "apt-get install failed"
