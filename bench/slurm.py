"""The Slurm backend's scheduling overhead per trial, against the local backend.

The suite's ``slurm`` section (``python bench/suite.py --only slurm``): 50 short trials (the
``trials`` section's no-op recipe: score a constant prediction), run

- on the local backend (worker processes, one per core), and
- on ``--backend slurm`` (one job array, as many jobs at once as the cluster runs),

each into a fresh ledger, end to end; then the time per trial once trials flow (first
trial's end to last trial's end), past the start-up costs of either.

The cluster is ``$SLURM_CONF``'s when that is set, else a one-node cluster started for the
section with ``scripts/slurm.sh`` (as root: it installs Slurm when missing) and stopped after.
Every job is a new Python process on the node: the overhead measured is what Slurm adds
(sbatch, scheduling, a process start and imports per trial), which the local backend pays
once per worker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from suite import NOOP_RECIPE, Row, _ratios, _run, _spec, _steady

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _cluster(tmp: Path) -> Iterator[str | None]:
    """A Slurm config to submit to (SLURM_CONF, else a test cluster), or None."""
    if os.environ.get("SLURM_CONF"):
        yield os.environ["SLURM_CONF"]
        return
    folder = tmp / "cluster"
    start = subprocess.run(
        [str(ROOT / "scripts" / "slurm.sh"), "start", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if start.returncode != 0:
        print(f"no Slurm cluster: {start.stderr.strip()}", file=sys.stderr)
        yield None
        return
    os.environ["SLURM_CONF"] = start.stdout.strip()
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        del os.environ["SLURM_CONF"]
        subprocess.run([str(ROOT / "scripts" / "slurm.sh"), "stop", str(folder)], check=False)


def bench_slurm(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import LocalBackend
    from fairtrial.backends.slurm import SlurmBackend, SlurmSettings

    n = 20 if quick else 50
    (tmp / "noop.py").write_text(NOOP_RECIPE)
    spec = _spec(tmp, "noop", "noop:train", n, "x = 0")
    local = LocalBackend()
    seconds = _run(spec, local, tmp / "l.db") / n
    rows = [Row("slurm", f"local ({local.workers} workers), {n} trials", seconds, "s")]
    steady = [Row("slurm", "local: time per trial, steady", _steady(spec, tmp / "l.db"), "s")]
    with _cluster(tmp) as conf:
        if conf is None:
            note = "no Slurm cluster could be started"
            rows.append(Row("slurm", "slurm", None, "s", note=note))
            return _ratios(rows)
        backend = SlurmBackend(SlurmSettings(folder=str(tmp / "jobs")))
        seconds = _run(spec, backend, tmp / "s.db") / n
        rows.append(Row("slurm", f"slurm (one job array), {n} trials", seconds, "s"))
        per_trial = _steady(spec, tmp / "s.db")
        note = "each job: a new process on the node (start, imports), then the trial"
        steady.append(Row("slurm", "slurm: time per trial, steady", per_trial, "s", note=note))
    return _ratios(rows) + _ratios(steady)
