"""The benchmark suite: one command, one table of ratios, measured side by side on this machine.

::

    python bench/suite.py [--quick] [--json FILE] [--no-peers] [--only SECTION ...]

Sections (each ratio is against the first row of its section, measured in the same session):

``log``      one metric point: bare ``list.append`` vs ``ctx.log`` (worker path) vs MLflow
             ``log_metric`` (SQLite) vs wandb offline, from ``bench/log_overhead.py``.
``trials``   per-trial overhead of short trials (default 200) that do nothing but score a
             constant prediction: fairtrial local (workers) vs inline vs Ray, and Ray Tune
             running the same work as a function trainable (a bare call in the note); then
             the time per trial on local and inline once trials flow (from the first
             trial's ending to the last one's), past every start-up cost.
``seeds``    the digits MLP, 10 and 100 seeds: sequential (one process) vs worker processes
             vs vectorized (one batched model); plus one seed alone, the yardstick of the
             "10 seeds in at most 3x one seed" target.
``workers``  10 seeds of the digits MLP on the local backend at each workers x threads split
             that fits the cores.
``batched``  whole experiments as batched models: the demo's 40 trials vectorized against
             local workers and one trial; 10 seeds of cnn1d and transformer (``batched.py``).
``scale``    the demo's MLP at 2 to 100 seeds: worker processes against vectorized.
``tuning``   fair tuning: the driver's time per tuning trial against the trial's own (random
             and tpe samplers), and the tuning example end to end (``tuning.py``).
``rl``       environment tasks: fairtrial's evaluation loop per CartPole step against calling
             ``env.step`` directly, and a CartPole comparison end to end (``rl.py``).
``slurm``    50 short trials on the Slurm backend (one job array on ``$SLURM_CONF``'s cluster,
             else a one-node cluster started with ``scripts/slurm.sh``) against the local
             backend: time per trial end to end and once trials flow (``slurm.py``).
``integ``    what ``FairtrialCallback`` costs a Lightning and a Hugging Face Trainer training
             loop per step, against the same loop without it (``integrations.py``).
``gpu``      on a CUDA GPU (skipped without one): the demo as batched models against one trial
             at a time, 100 seeds x 4 arms, and the speed example's energy verdict (``gpu.py``).
``mirror``   ``run --mirror mlflow``: ctx.log and the driver's time per point with the live
             MLflow mirror against without; exports of 40 trials to MLflow and W&B
             (``mirror.py``).
``demo``     ``fairtrial demo`` end to end in a fresh folder (a subprocess).

Every fairtrial row is a real run (``run_experiment``) into a fresh SQLite ledger in a
temporary folder, so ledger writes are included. Peers that are not installed say so. On a
machine shared with other work, compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import log_overhead


@dataclass
class Row:
    section: str
    name: str
    seconds: float | None  # the measured quantity, in its unit below
    unit: str
    ratio: float | None = None  # against the first row of the section
    note: str = ""


NOOP_RECIPE = """
import numpy as np


def train(config, ctx):
    ctx.log(step=0, x=1.0)
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int))
"""


def _spec(folder: Path, name: str, recipe: str, seeds: int, baseline: str, extra: str = "") -> Any:
    from fairtrial.spec import load_spec

    path = folder / f"{name}.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [experiment]
            name = "{name}"
            task = "digits"
            recipe = "{recipe}"
            seeds = {seeds}
            {extra}

            [baseline]
            {baseline}
            """
        )
    )
    return load_spec(path)


def _run(spec: Any, backend: Any, db: Path) -> float:
    """Seconds for a whole run into a fresh ledger; raises if a trial did not finish."""
    from rich.console import Console

    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment

    led = Ledger(db)
    quiet = Console(file=io.StringIO())
    t0 = time.perf_counter()
    summary = run_experiment(spec, led, backend, console=quiet, show_progress=False)
    seconds = time.perf_counter() - t0
    led.close()
    if summary.finished != summary.total:
        raise RuntimeError(f"{spec.name}: {summary.failures[:1]}")
    return seconds


def _ratios(rows: list[Row]) -> list[Row]:
    base = rows[0].seconds if rows else None
    for r in rows:
        if r.seconds is not None and base:
            r.ratio = r.seconds / base
    return rows


# -- sections ---------------------------------------------------------------------------------
def bench_log(quick: bool, peers: bool, tmp: Path) -> list[Row]:
    lo = log_overhead
    n, reps = (50_000, 3) if quick else (200_000, 5)
    results = [
        lo.measure("list.append((step, value))", lo.bare_append_loop(), n, reps),
        lo.bench_ctx_pipe(n, reps),
    ]
    if peers:
        lo._quiet_peer_env(tmp)
        cwd = Path.cwd()
        os.chdir(tmp)
        try:
            results.append(lo.bench_mlflow("sqlite", 50 if quick else 200, 2 if quick else 3, tmp))
            results.append(lo.bench_wandb(2_000 if quick else 20_000, 2 if quick else 3, tmp))
        finally:
            os.chdir(cwd)
    rows = [
        Row(
            "log",
            r.method,
            None if r.ns_per_point is None else r.ns_per_point,
            "ns/point",
            note=f"{r.points} points" if r.status == "ok" else r.status,
        )
        for r in results
    ]
    return _ratios(rows)


def _ray_up() -> bool:
    try:
        import ray
    except ImportError:
        return False
    if not ray.is_initialized():
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return True


def bench_trials(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import InlineBackend, LocalBackend
    from fairtrial.context import TrialContext
    from fairtrial.tasks import get_task

    n = 50 if quick else 200
    (tmp / "noop.py").write_text(NOOP_RECIPE)
    sys.path.insert(0, str(tmp))
    import noop  # type: ignore[import-not-found]

    task = get_task("digits")
    t0 = time.perf_counter()
    for seed in range(n):
        ctx = TrialContext(config={}, seed=seed, root_seed=0, task=task, emit=lambda k, p: None)
        noop.train({}, ctx)
    bare = (time.perf_counter() - t0) / n
    spec = _spec(tmp, "noop", "noop:train", n, "x = 0")
    local = LocalBackend()
    seconds = _run(spec, local, tmp / "l.db") / n
    rows = [Row("trials", f"fairtrial local ({local.workers} workers), {n} trials", seconds, "s")]
    inline = _run(spec, InlineBackend(), tmp / "i.db") / n
    note = f"the recipe alone: {bare * 1000:.2f} ms"
    rows.append(Row("trials", "fairtrial inline (this process)", inline, "s", note=note))
    overhead = []
    for name, db in (("local", tmp / "l.db"), ("inline", tmp / "i.db")):
        per_trial = _steady(spec, db)
        note = "first trial's end to last trial's end / trials - 1: past every start-up cost"
        overhead.append(Row("trials", f"{name}: time per trial, steady", per_trial, "s", note=note))
    if _ray_up():
        from fairtrial.backends.ray import RayBackend

        seconds = _run(spec, RayBackend(), tmp / "r.db") / n
        rows.append(Row("trials", "fairtrial ray (local instance)", seconds, "s"))
        rows.append(_ray_tune(n, tmp))
        import ray

        ray.shutdown()
    else:
        rows.append(Row("trials", "fairtrial ray", None, "s", note="ray not installed"))
    return _ratios(rows) + _ratios(overhead)


def _steady(spec: Any, db: Path) -> float:
    """Seconds per trial once trials flow: from the first trial's ending to the last one's,
    over the trials between (the workers had started before the first trial ended)."""
    from fairtrial.ledger import Ledger

    led = Ledger(db)
    try:
        ends = sorted(t.finished_at or 0.0 for t in led.trials(spec.experiment_id))
    finally:
        led.close()
    return (ends[-1] - ends[0]) / max(1, len(ends) - 1)


def _ray_tune(n: int, tmp: Path) -> Row:
    try:
        from ray import tune
    except ImportError:
        return Row("trials", "Ray Tune", None, "s", note="ray[tune] not installed")

    def trainable(config: dict[str, Any]) -> None:
        # the same work as the noop recipe: load the task, score a constant prediction
        import numpy as np

        from fairtrial.tasks import get_task

        task = get_task("digits")
        d = task.data()
        tune.report({"accuracy": task.score(np.zeros(len(d.x_test), dtype=int), "accuracy")})

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    tuner = tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search(list(range(n)))},
        run_config=tune.RunConfig(storage_path=str(tmp / "tune"), verbose=0),
    )
    t0 = time.perf_counter()
    tuner.fit()
    return Row("trials", "Ray Tune (same work per trial)", (time.perf_counter() - t0) / n, "s")


MLP_BASELINE = "epochs = {epochs}"


def bench_seeds(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import InlineBackend, LocalBackend, make_backend
    from fairtrial.backends.local import available_cores
    from fairtrial.backends.vectorized import VectorizedBackend

    epochs = 5 if quick else 20
    base = MLP_BASELINE.format(epochs=epochs)
    cores = available_cores()
    rows: list[Row] = []
    two = _spec(tmp, "one", "mlp", 2, base)
    _run(two, InlineBackend(), tmp / "warm.db")  # imports and first-call costs, untimed
    one = _run(two, make_backend("inline", threads=cores), tmp / "one.db") / 2
    rows.append(Row("seeds", f"one seed alone (digits MLP, {epochs} epochs)", one, "s"))
    for n in (10, 100):
        spec = _spec(tmp, f"s{n}", "mlp", n, base)
        seq = _run(spec, make_backend("inline", threads=cores), tmp / f"seq{n}.db")
        vec = _run(spec, VectorizedBackend(threads=cores), tmp / f"vec{n}.db")
        loc = _run(spec, LocalBackend(workers=cores, threads=1), tmp / f"loc{n}.db")
        group = [
            Row("seeds", f"{n} seeds: sequential, 1 process x {cores} threads", seq, "s"),
            Row("seeds", f"{n} seeds: {cores} worker processes x 1 thread", loc, "s"),
            Row("seeds", f"{n} seeds: vectorized, 1 process x {cores} threads", vec, "s"),
        ]
        _ratios(group)
        for r in group:
            r.note = f"{r.seconds / one:.1f}x one seed" if r.seconds else ""
        rows += group
    return rows


def bench_workers(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import LocalBackend
    from fairtrial.backends.local import available_cores

    epochs = 5 if quick else 20
    spec = _spec(tmp, "wt", "mlp", 10, MLP_BASELINE.format(epochs=epochs))
    cores = available_cores()
    splits = sorted(
        {(w, t) for w in range(1, cores + 1) for t in range(1, cores + 1) if w * t <= cores}
    )
    rows = []
    for w, t in splits:
        seconds = _run(spec, LocalBackend(workers=w, threads=t), tmp / f"wt{w}x{t}.db")
        rows.append(Row("workers", f"10 seeds, local, {w} workers x {t} threads", seconds, "s"))
    return _ratios(rows)


def bench_demo(tmp: Path) -> list[Row]:
    folder = tmp / "demo"
    folder.mkdir()
    cmd = [sys.executable, "-m", "fairtrial.cli", "demo"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    note = "" if out.returncode == 0 else f"failed: {out.stderr.strip().splitlines()[-1:]}"
    return [Row("demo", "fairtrial demo, end to end", seconds, "s", note=note)]


# -- report -----------------------------------------------------------------------------------
def print_table(
    info: dict[str, Any],
    rows: list[Row],
    argv: list[str],
    wall: float,
    script: str = "bench/suite.py",
) -> None:
    print(
        "machine: " + ", ".join(f"{k} {info[k]}" for k in ("cpu", "usable_cores", "load_average"))
    )
    print(f"python {info['python']}, fairtrial {info['fairtrial']}")
    print(f"command: python {script} " + " ".join(argv))
    print()
    width = max(len(r.name) for r in rows) + 2
    print(f"{'section':<8}  {'row':<{width}}  {'value':>14}  {'ratio':>8}  note")
    print("-" * (width + 50))
    for r in rows:
        if r.seconds is None:
            value = "—"
        elif r.unit == "s":
            value = f"{r.seconds * 1000:,.1f} ms" if r.seconds < 1 else f"{r.seconds:,.2f} s"
        else:
            value = f"{r.seconds:,.0f} {r.unit}"
        ratio = "" if r.ratio is None else f"{r.ratio:,.2f}x"
        print(f"{r.section:<8}  {r.name:<{width}}  {value:>14}  {ratio:>8}  {r.note}")
    print()
    print(f"ratios are against the first row of each section; total wall time {wall:.0f} s")


SECTIONS = (
    "log", "trials", "seeds", "workers", "batched", "scale", "tuning", "rl", "slurm", "integ",
    "mirror", "gpu", "demo",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points, trials and epochs")
    p.add_argument("--no-peers", action="store_true", help="skip MLflow and wandb")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    import batched  # after suite's own definitions: they import them
    import gpu
    import integrations
    import mirror
    import rl
    import slurm
    import tuning

    sections = args.only or list(SECTIONS)
    info = log_overhead.machine_info()
    start = time.perf_counter()
    rows: list[Row] = []
    runs: dict[str, Callable[[Path], list[Row]]] = {
        "log": lambda t: bench_log(args.quick, not args.no_peers, t),
        "trials": lambda t: bench_trials(args.quick, t),
        "seeds": lambda t: bench_seeds(args.quick, t),
        "workers": lambda t: bench_workers(args.quick, t),
        "batched": lambda t: batched.bench_batched(args.quick, t),
        "scale": lambda t: batched.bench_scale(args.quick, t),
        "tuning": lambda t: tuning.bench_tuning(args.quick, t),
        "rl": lambda t: rl.bench_rl(args.quick, t),
        "slurm": lambda t: slurm.bench_slurm(args.quick, t),
        "integ": lambda t: integrations.bench_integrations(args.quick, t),
        "gpu": lambda t: gpu.bench_gpu(args.quick, t),
        "mirror": lambda t: mirror.bench_mirror(args.quick, t),
        "demo": bench_demo,
    }
    cwd = Path.cwd()
    for name in sections:
        with tempfile.TemporaryDirectory(prefix=f"fairtrial-bench-{name}-") as d:
            os.chdir(d)  # .fairtrial/ work folders of the runs stay in the temp folder
            try:
                rows += runs[name](Path(d))
            finally:
                os.chdir(cwd)
        print(f"[{name} done after {time.perf_counter() - start:.0f} s]", file=sys.stderr)
    wall = time.perf_counter() - start
    print_table(info, rows, argv, wall)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
