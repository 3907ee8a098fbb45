#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the tests; prints its URL on stdout.
# Usage: url=$(scripts/postgres.sh start DIR); ... ; scripts/postgres.sh stop DIR
# Installs Debian's postgresql package when run as root and no server binaries are present.
set -euo pipefail
action="$1"; dir="$2"
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$action" in
  start)
    bin="$(find_bin)"
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing PostgreSQL (apt-get)" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
      bin="$(find_bin)"
    fi
    [ -n "$bin" ] || { echo "no PostgreSQL server binaries found" >&2; exit 1; }
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U fairtrial >/dev/null
    # fsync off: a test server whose data is thrown away; loopback only.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-h 127.0.0.1 -p $port -k $dir -F -c max_connections=200" start >/dev/null
    echo "postgresql://fairtrial@127.0.0.1:$port/postgres"
    ;;
  stop)
    bin="$(find_bin)"
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
esac
