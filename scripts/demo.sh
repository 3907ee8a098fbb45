#!/usr/bin/env bash
# Set everything up and run the flagship demo: a real experiment on the embedded SQLite store.
# The server extra is for the README's next step, publishing to a registry (fairtrial serve).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh sklearn,torch,server
exec .venv/bin/fairtrial demo "$@"
