#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the registry's browser test; prints its path.
# Installs the chromium package (apt-get) when run as root and no Chromium is found. Playwright
# drives this binary; it never downloads a browser of its own.
set -euo pipefail
# Prints the first Chromium found, or nothing; it must not fail (set -e would end the script
# before the install when none is found).
find_bin() {
  for b in /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -x "$b" ]; then echo "$b"; return; fi
  done
}
bin="$(find_bin)"
if [ -z "$bin" ]; then
  "$(dirname "$0")/apt_install.sh" chromium
  bin="$(find_bin)"
  [ -n "$bin" ] || { echo "the chromium package installed no /usr/bin/chromium" >&2; exit 1; }
fi
echo "$bin"
