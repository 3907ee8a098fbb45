#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the tests; prints its URL on stdout.
# Usage: url=$(scripts/postgres.sh start DIR); ... ; scripts/postgres.sh stop DIR
#        scripts/postgres.sh bin    prints the server binaries' directory
# Installs Debian's postgresql package when run as root and no server binaries are present.
set -euo pipefail
usage="usage: scripts/postgres.sh start DIR | stop DIR | bin"
action="${1:-}"; dir="${2:-}"
# The newest version's binaries, or nothing; it must not fail (set -e would end the script
# before the install when none is found).
find_bin() {
  for d in /usr/lib/postgresql/*/bin; do if [ -x "$d/initdb" ]; then echo "$d"; fi; done |
    sort -V | tail -n 1
}
ensure_bin() {
  bin="$(find_bin)"
  if [ -z "$bin" ]; then
    "$(dirname "$0")/apt_install.sh" postgresql
    bin="$(find_bin)"
    [ -n "$bin" ] || { echo "the postgresql package installed no server binaries" >&2; exit 1; }
  fi
}
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$action" in
  bin)
    ensure_bin
    echo "$bin"
    ;;
  start)
    [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }
    ensure_bin
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U fairtrial >/dev/null
    # fsync off: a test server whose data is thrown away; loopback only.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-h 127.0.0.1 -p $port -k $dir -F -c max_connections=200" start >/dev/null
    echo "postgresql://fairtrial@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }
    # Never installs: without server binaries no server can be running there.
    bin="$(find_bin)"
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "$usage" >&2; exit 2
    ;;
esac
