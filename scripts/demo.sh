#!/usr/bin/env bash
# Set everything up and run the flagship demo: a real experiment on the embedded SQLite store.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh sklearn,torch
exec .venv/bin/fairtrial demo "$@"
