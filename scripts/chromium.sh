#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the registry's browser test; prints its path.
# Installs the chromium package (apt-get) when run as root and no Chromium is found. Playwright
# drives this binary; it never downloads a browser of its own.
set -euo pipefail
find_bin() { for b in /usr/bin/chromium /usr/bin/chromium-browser; do [ -x "$b" ] && { echo "$b"; return; }; done; }
bin="$(find_bin)"
if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Chromium (apt-get)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  bin="$(find_bin)"
fi
[ -n "$bin" ] || { echo "no Chromium found (install Debian's chromium package)" >&2; exit 1; }
echo "$bin"
