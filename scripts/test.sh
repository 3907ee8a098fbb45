#!/usr/bin/env bash
# Set everything up and run the checks: ruff, mypy, and the test suite on SQLite and on a real
# PostgreSQL server started on loopback for the run, the Slurm backend on a real one-node Slurm
# cluster started for the run, and a headless-browser test in Debian's Chromium. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh sklearn,torch,postgres,ray,server,webtest,dev,crosscheck,tuning,mnist,ucr,mlflow,tensorboard,rl,slurm,lightning,hf,wandb
pgdir=""; slurmdir=""
cleanup() {
  if [ -n "$pgdir" ]; then scripts/postgres.sh stop "$pgdir"; fi
  if [ -n "$slurmdir" ]; then scripts/slurm.sh stop "$slurmdir"; fi
}
trap cleanup EXIT
if [ -z "${FAIRTRIAL_TEST_POSTGRES:-}" ]; then
  pgdir="$(mktemp -d /tmp/fairtrial-pg.XXXXXX)"
  if url="$(scripts/postgres.sh start "$pgdir")"; then
    export FAIRTRIAL_TEST_POSTGRES="$url"
    echo "PostgreSQL test server: $url"
  else
    echo "no PostgreSQL server could be started: its tests will skip (and fail under CI=true)"
  fi
fi
if [ -z "${FAIRTRIAL_TEST_SLURM:-}" ]; then
  slurmdir="$(mktemp -d /tmp/fairtrial-slurm.XXXXXX)"
  if conf="$(scripts/slurm.sh start "$slurmdir")"; then
    export FAIRTRIAL_TEST_SLURM="$conf"
    echo "Slurm test cluster: $conf"
  else
    echo "no Slurm cluster could be started: its tests will skip (and fail under CI=true)"
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
