"""The live MLflow mirror and the exports: what they cost a run, and how long an export takes.

The suite's ``mirror`` section (``python bench/suite.py --only mirror``), or alone::

    python bench/mirror.py [--quick]

- ``ctx.log`` per point inside a trial, timed by the recipe itself (the flushes included),
  without a mirror (the baseline) and with ``--mirror mlflow`` (an MLflow SQLite store,
  MLflow's default kind), at 1 ms of CPU work a point (a training loop) and flat out: on the
  local backend the loop runs in a worker process, so its code is the same by construction
  and only the machine's cores are shared with the mirror's process; inline, the loop also
  writes the ledger (the driver's work) in the same process as the mirror's feeding thread.
- The driver's time per point: ``_LedgerSink.event`` with batches of 1000 points (what a
  worker's ``ctx.log`` flush sends) into a SQLite ledger, without observers and with the
  mirror (one queue put per batch); and the mirror's process: points per second it sends to
  MLflow, from the first batch to the end of its last ``log_batch``.
- Exports of 40 trials (2 arms x 20 seeds, 50 points each): ``fairtrial export --to mlflow``
  (SQLite store) and ``--to wandb`` (offline runs), after the libraries are imported.

Every run is a real ``run_experiment`` into a fresh SQLite ledger in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import Row, _ratios

RECIPE = """
import time

import numpy as np


def train(config, ctx):
    n, work = int(config["points"]), float(config["work_ms"]) / 1000
    if not work:  # as fast as it goes: the loop times itself, final flush included
        t0 = time.perf_counter_ns()
        for i in range(n):
            ctx.log(step=i, loss=1.0 / (i + 1))
        ctx.flush()
        spent = time.perf_counter_ns() - t0
    else:  # a training loop: `work` of CPU per step, then one point
        spent = 0
        for i in range(n):
            until = time.perf_counter() + work
            while time.perf_counter() < until:
                pass
            t0 = time.perf_counter_ns()
            ctx.log(step=i, loss=1.0 / (i + 1))
            spent += time.perf_counter_ns() - t0
    ctx.log(step=n, log_ns_per_point=spent / n)
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int) + int(config["arm"]))
"""
SPEC = """
[experiment]
name = "{name}"
task = "digits"
recipe = "benchlog:train"
seeds = {seeds}
deterministic = true

[baseline]
points = {points}
work_ms = {work_ms}
arm = 0

[arms.other]
arm = 1
"""


def _quiet() -> Any:
    from rich.console import Console

    return Console(file=io.StringIO())


def _spec(tmp: Path, name: str, seeds: int, points: int, work_ms: float = 0.0) -> Any:
    from fairtrial.spec import load_spec

    (tmp / "benchlog.py").write_text(RECIPE)
    path = tmp / f"{name}.toml"
    path.write_text(SPEC.format(name=name, seeds=seeds, points=points, work_ms=work_ms))
    return load_spec(path)


def _mirror(spec: Any, uri: str) -> Any:
    from fairtrial.exports.mirror import MlflowMirror, targets_of

    return MlflowMirror(targets_of(spec), uri, _quiet(), close_seconds=600)


def _log_cost(
    tmp: Path, backend: Any, points: int, mirror: bool, work_ms: float = 0.0
) -> tuple[float, float, str]:
    """(median ns per ctx.log point over the trials, the run's seconds, a note)."""
    from fairtrial.ledger import Ledger
    from fairtrial.observe import observing
    from fairtrial.runner import run_experiment

    tag = f"{backend.name}-{'on' if mirror else 'off'}-{work_ms:g}"
    folder = tmp / tag
    folder.mkdir()
    spec = _spec(folder, f"log-{tag}", 3, points, work_ms)
    led = Ledger(folder / "ledger.db")
    observer = _mirror(spec, f"sqlite:///{folder / 'mlflow.db'}") if mirror else None
    t0 = time.perf_counter()
    with observing(*([observer] if observer else [])):
        summary = run_experiment(spec, led, backend, console=_quiet(), show_progress=False)
    seconds = time.perf_counter() - t0
    note = ""
    if observer is not None:
        t1 = time.perf_counter()
        observer.close()
        note = (
            f"mirror: {observer.points} points sent, {time.perf_counter() - t1:.1f} s to "
            f"drain after the run; {observer.stopped or 'ok'}"
        )
    if summary.finished != summary.total:
        raise RuntimeError(f"{spec.name}: {summary.failures[:1]}")
    per_point = [
        value
        for t in led.trials(spec.experiment_id)
        for _, _, _, name, value in led.metrics(t.id)
        if name == "log_ns_per_point"
    ]
    led.close()
    return statistics.median(per_point), seconds, note


def _driver_cost(tmp: Path, batches: int, uri: str | None) -> tuple[float, str]:
    """ns per point of ``_LedgerSink.event`` (batches of 1000 points), and a note."""
    from fairtrial.backends import InlineBackend
    from fairtrial.ledger import Ledger
    from fairtrial.recorder import _LedgerSink
    from fairtrial.rounds import RunSummary
    from fairtrial.runner import run_experiment
    from fairtrial.trial import TrialJob, TrialOutcome

    folder = Path(tempfile.mkdtemp(prefix="driver-", dir=tmp))
    spec = _spec(folder, "driver", 1, 1)
    led = Ledger(folder / "ledger.db")
    run_experiment(spec, led, InlineBackend(), console=_quiet(), show_progress=False)
    trial = led.trials(spec.experiment_id)[0]
    job = TrialJob(trial.id, spec.experiment_id, trial.arm, trial.seed, trial.attempt + 1,
                   trial.config, spec.root_seed, spec.task, spec.task_checksum,
                   spec.metric)  # fmt: skip
    sink = _LedgerSink(led, RunSummary(spec.experiment_id, 1, 0), "", "", None, None, _quiet())
    observer = _mirror(spec, uri) if uri else None
    if observer is not None:
        sink.observers = [observer]
    rows = [[(k * 1000 + i, 0.001 * i, "loss", 1.0 / (i + 1)) for i in range(1000)]
            for k in range(batches)]  # fmt: skip
    sink.started(job)
    t0 = time.perf_counter_ns()
    for batch in rows:
        sink.event(job, "metrics", batch)
    per_point = (time.perf_counter_ns() - t0) / (batches * 1000)
    note = f"{batches * 1000} points in the ledger"
    if observer is not None:
        observer.finished(job, TrialOutcome("finished", result=0.5))
        observer.close()
        sent = (time.perf_counter_ns() - t0) / 1e9
        note = (
            f"mirror process: {observer.points / sent:,.0f} points/s to {uri.split(':')[0]} "
            f"({observer.points} points in {sent:.1f} s); {observer.stopped or 'ok'}"
        )
    led.close()
    return per_point, note


def _exports(tmp: Path, quick: bool) -> list[Row]:
    """Both exports of 40 trials (quick: 10)."""
    import mlflow  # noqa: F401 (imports are outside the timings)
    import wandb  # noqa: F401

    from fairtrial.backends import InlineBackend
    from fairtrial.exports.mlflow import export_mlflow
    from fairtrial.exports.wandb import export_wandb
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment

    seeds = 5 if quick else 20
    folder = tmp / "exports"
    folder.mkdir()
    spec = _spec(folder, "exports", seeds, 50)
    led = Ledger(folder / "ledger.db")
    run_experiment(spec, led, InlineBackend(), console=_quiet(), show_progress=False)
    exp = led.experiment(spec.experiment_id)
    n = 2 * seeds
    rows = []
    done = export_mlflow(led, exp, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    note = f"{done.seconds / n * 1000:.0f} ms per trial; {done.points} points"
    rows.append(Row("mirror", f"export --to mlflow, {n} trials (SQLite)", done.seconds, "s",
                    note=note))  # fmt: skip
    done = export_wandb(led, exp, folder=folder / "wb")
    rows.append(Row("mirror", f"export --to wandb, {n} trials (offline)", done.seconds, "s",
                    note=f"{done.seconds / n * 1000:.0f} ms per trial (wandb.init each, its "
                    "service started once)"))  # fmt: skip
    again = export_wandb(led, exp, folder=folder / "wb")
    rows.append(Row("mirror", "export --to wandb again (nothing new)", again.seconds, "s",
                    note=f"{again.already} already there"))  # fmt: skip
    led.close()
    return rows


def bench_mirror(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import InlineBackend, LocalBackend

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    stress = 20_000 if quick else 100_000
    paced = 500 if quick else 2_000
    rows: list[Row] = []
    for backend, points, work_ms in (
        (LocalBackend(workers=1), paced, 1.0),
        (InlineBackend(), paced, 1.0),
        (LocalBackend(workers=1), stress, 0.0),
        (InlineBackend(), stress, 0.0),
    ):
        section: list[Row] = []
        how = f"{work_ms:g} ms of work a point" if work_ms else "flat out"
        for mirror in (False, True):
            ns, seconds, note = _log_cost(tmp, backend, points, mirror, work_ms)
            name = f"ctx.log, {backend.name}, {how}, mirror {'on' if mirror else 'off'}"
            what = f"6 trials x {points} points, run {seconds:.1f} s"
            section.append(
                Row("mirror", name, ns, "ns/point", note=f"{what}; {note}" if note else what)
            )
        rows += _ratios(section)
    batches = 100 if quick else 500
    section = []
    for uri in (None, f"sqlite:///{tmp / 'driver.db'}", f"file:{tmp / 'driver-mlruns'}"):
        ns, note = _driver_cost(tmp, batches, uri)
        store = "" if uri is None else f" ({uri.split(':')[0]} store)"
        name = f"driver: sink.event, mirror {'on' if uri else 'off'}{store}"
        section.append(Row("mirror", name, ns, "ns/point", note=note))
    rows += _ratios(section)
    return rows + _exports(tmp, quick)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points and trials")
    args = p.parse_args(argv)
    from log_overhead import machine_info
    from suite import print_table

    start = time.perf_counter()
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="fairtrial-bench-mirror-") as d:
        os.chdir(d)
        try:
            rows = bench_mirror(args.quick, Path(d))
        finally:
            os.chdir(cwd)
    wall = time.perf_counter() - start
    print_table(machine_info(), rows, sys.argv[1:], wall, script="bench/mirror.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
