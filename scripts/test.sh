#!/usr/bin/env bash
# Set everything up and run the checks: ruff, mypy, and the test suite on SQLite and on a real
# PostgreSQL server started on loopback for the run, and a headless-browser test in Debian's
# Chromium. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh sklearn,torch,postgres,ray,server,webtest,dev,crosscheck,tuning,mnist,ucr,mlflow,tensorboard,rl,slurm,lightning,hf,wandb
if [ -z "${FAIRTRIAL_TEST_POSTGRES:-}" ]; then
  pgdir="$(mktemp -d /tmp/fairtrial-pg.XXXXXX)"
  trap 'scripts/postgres.sh stop "$pgdir"' EXIT
  if url="$(scripts/postgres.sh start "$pgdir")"; then
    export FAIRTRIAL_TEST_POSTGRES="$url"
    echo "PostgreSQL test server: $url"
  else
    echo "no PostgreSQL server could be started: its tests will skip (and fail under CI=true)"
  fi
fi
if [ -z "${FAIRTRIAL_TEST_CHROMIUM:-}" ]; then
  if chromium="$(scripts/chromium.sh)"; then
    export FAIRTRIAL_TEST_CHROMIUM="$chromium"
  else
    echo "no Chromium: the browser test will skip (and fail under CI=true)"
  fi
fi
echo "== ruff"; .venv/bin/ruff check src tests bench examples && .venv/bin/ruff format --check src tests bench examples
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
