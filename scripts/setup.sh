#!/usr/bin/env bash
# Create ./.venv (if needed) and install fairtrial with the extras the demo and tests use.
# Usage: scripts/setup.sh [EXTRAS]   (default: sklearn,torch)
# torch is pinned through scripts/constraints.txt: an unpinned torch lets pip resolve the newest
# release with several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-sklearn,torch}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in python3.11 python3.12 python3.10 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      py="$candidate"; break
    fi
  done
fi
[ -n "$py" ] || { echo "fairtrial needs Python >= 3.10 (set PYTHON=/path/to/python)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
# Drops pip's "WARNING: Location" noise. A bare grep -v fails when it drops every line, and
# "|| true" after pip would hide pip's own failure too.
quiet() { grep -v "^WARNING: Location" || true; }
stamp=".venv/.fairtrial-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/constraints.txt -nt "$stamp" ]; then
  echo "installing fairtrial[$extras] into .venv (first time: a minute or two)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | quiet ||
    echo "could not upgrade pip; going on with the one in .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c scripts/constraints.txt -e ".[$extras]" 2>&1 | quiet ||
    { echo "pip could not install fairtrial[$extras] into .venv (its error is above)" >&2; exit 1; }
  .venv/bin/python -c "import fairtrial" # fail here, not later, if the install did not work
  touch "$stamp"
fi
