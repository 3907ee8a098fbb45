"""What one metric point costs: a list append, ``ctx.log``, the ledger, MLflow and wandb.

One process, one machine, side by side::

    python bench/log_overhead.py [--points N] [--repeat R] [--json FILE]

Every method runs the same loop shape (``for i, v in enumerate(values): <call>``) over
pre-computed Python floats, timed with ``time.perf_counter_ns`` around the whole loop (final
flush included), after a warm-up; the table gives the median over ``R`` repeats of
(elapsed / points) and its ratio to the bare ``list.append((step, value))``.

1. ``list.append((step, value))``: the floor every ratio is against.
2. ``ctx.log(step=i, loss=v)`` with an ``emit`` that does nothing: the buffer and the batched
   conversion/NaN check alone (row 3 minus row 2 is the pipe, row 4 minus row 2 the ledger).
3. ``ctx.log(step=i, loss=v)`` on a real :class:`fairtrial.context.TrialContext` (the
   ``digits`` task) whose ``emit`` is what a worker does: ``conn.send((kind, rows))`` on a real
   ``multiprocessing.Pipe()``, drained by a reader thread. The amortized flushes (conversion,
   NaN check, pickling, the write to the pipe) are inside the timing.
4. ``ctx.log`` whose ``emit`` is :meth:`fairtrial.ledger.Ledger.add_metrics` on a SQLite ledger
   in a temporary folder: the whole way to disk, amortized per point.
5. ``mlflow.log_metric`` inside an active run, on a SQLite tracking URI and on the (deprecated)
   local file store, and ``wandb.log`` with ``mode="offline"``, each in a temporary folder;
   skipped with "not installed" when the library cannot be imported.

The peers are far slower per call, so they get fewer points; every row shows its own N.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# A timed loop: takes the values to log, returns the elapsed nanoseconds.
Loop = Callable[[list[float]], int]


@dataclass
class Result:
    method: str
    points: int
    repeats: int
    status: str = "ok"  # ok | not installed | failed: ...
    ns_per_point: float | None = None  # median over repeats
    ns_min: float | None = None
    ns_max: float | None = None
    samples: list[float] = field(default_factory=list)
    ratio: float | None = None  # ns_per_point / the bare append's
    note: str = ""


# ------------------------------------------------------------------------------------------
# machine


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    from fairtrial.provenance import cpu_model

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": load,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "fairtrial": _version("fairtrial"),
        "sqlalchemy": _version("sqlalchemy"),
        "mlflow": _version("mlflow"),
        "wandb": _version("wandb"),
    }


# ------------------------------------------------------------------------------------------
# timing


def measure(
    method: str, loop: Loop, points: int, repeats: int, warmup_points: int | None = None
) -> Result:
    """Warm up, then time ``repeats`` runs of ``loop`` over ``points`` values."""
    values = [1.0 / (i + 1) for i in range(points)]
    loop(values[: warmup_points or points])
    samples = []
    for _ in range(repeats):
        gc.collect()
        samples.append(loop(values) / points)
    return Result(
        method,
        points,
        repeats,
        ns_per_point=statistics.median(samples),
        ns_min=min(samples),
        ns_max=max(samples),
        samples=[round(s, 2) for s in samples],
    )


def bare_append_loop() -> Loop:
    def loop(values: list[float]) -> int:
        buf: list[tuple[int, float]] = []
        t0 = time.perf_counter_ns()
        for i, v in enumerate(values):
            buf.append((i, v))
        return time.perf_counter_ns() - t0

    return loop


def _context(emit: Callable[[str, Any], None]) -> Any:
    from fairtrial.context import TrialContext
    from fairtrial.tasks import get_task

    return TrialContext(
        config={"lr": 0.1},
        seed=0,
        root_seed=0,
        task=get_task("digits"),
        emit=emit,
        trial_id="bench/baseline/0",
    )


def ctx_loop(make_ctx: Callable[[], Any], after: Callable[[], None] = lambda: None) -> Loop:
    """``ctx.log`` on a fresh context per run; the final flush is timed, ``after`` is not."""

    def loop(values: list[float]) -> int:
        ctx = make_ctx()
        t0 = time.perf_counter_ns()
        for i, v in enumerate(values):
            ctx.log(step=i, loss=v)
        ctx.flush()
        elapsed = time.perf_counter_ns() - t0
        after()
        return elapsed

    return loop


class PipeDrain:
    """The parent's end of a worker pipe: a thread that receives (and unpickles) everything."""

    def __init__(self) -> None:
        self.recv_end, self.send_end = mp.Pipe()  # duplex, like the local backend's
        self.sent = 0
        self.rows = 0
        self.messages = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pipe-drain")
        self._thread.start()

    def _run(self) -> None:
        conn: Connection = self.recv_end
        while True:
            msg = conn.recv()
            if msg is None:
                return
            _kind, rows = msg
            with self._cond:
                self.rows += len(rows)
                self.messages += 1
                self._cond.notify_all()

    def emit(self, kind: str, payload: Any) -> None:
        self.send_end.send((kind, payload))  # exactly what a worker's emit does
        self.sent += len(payload)

    def wait_all(self) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.rows >= self.sent, timeout=60):
                raise RuntimeError(f"the reader got {self.rows} of {self.sent} rows")

    def close(self) -> None:
        self.send_end.send(None)
        self._thread.join(timeout=10)
        self.send_end.close()
        self.recv_end.close()


def bench_ctx_pipe(points: int, repeats: int) -> Result:
    from multiprocessing.reduction import ForkingPickler  # what Connection.send pickles with

    drain = PipeDrain()
    # the reader catches up between runs, outside the timing
    loop = ctx_loop(lambda: _context(drain.emit), after=drain.wait_all)
    try:
        res = measure("ctx.log → Pipe.send (worker path)", loop, points, repeats)
    finally:
        drain.close()
    sample = [(i, 0.001 * i, "loss", 1.0 / (i + 1)) for i in range(1000)]
    size = len(ForkingPickler.dumps(("metrics", sample)))
    res.note = (
        f"{drain.messages} flushes, {drain.rows} rows received by the reader thread; "
        f"~{size / 1000:.0f} B/point pickled at 1000 points/flush"
    )
    return res


def bench_ctx_ledger(points: int, repeats: int, tmp: Path) -> Result:
    from fairtrial.ledger import Ledger

    ledger = Ledger(tmp / "ledger.db")
    try:

        def emit(kind: str, payload: Any) -> None:
            if kind == "metrics":
                ledger.add_metrics("bench/baseline/0", 1, payload)

        res = measure(
            "ctx.log → Ledger.add_metrics (SQLite)",
            ctx_loop(lambda: _context(emit)),
            points,
            repeats,
        )
        stored = len(ledger.metrics("bench/baseline/0"))
        res.note = f"{stored} rows in the ledger (WAL, synchronous=NORMAL)"
        return res
    finally:
        ledger.close()


# ------------------------------------------------------------------------------------------
# peers


def _quiet_peer_env(tmp: Path) -> None:
    os.environ.update(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "MLFLOW_ALLOW_FILE_STORE": "true",  # the file store is deprecated in MLflow 3
            "MLFLOW_LOGGING_LEVEL": "WARNING",
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_DISABLE_CODE": "true",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_DIR": str(tmp / "wandb"),
            "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
            "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
            "WANDB_DATA_DIR": str(tmp / "wandb-data"),
        }
    )
    for name in ("mlflow", "alembic", "wandb"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")


def _importable(module: str) -> str | None:
    """None if ``module`` imports, else the reason."""
    try:
        __import__(module)
    except ImportError as exc:
        return "not installed" if exc.name == module else f"failed: import: {exc}"
    except Exception as exc:  # a broken install: say so, don't crash the benchmark
        return f"failed: import: {type(exc).__name__}: {exc}"
    return None


def bench_mlflow(store: str, points: int, repeats: int, tmp: Path) -> Result:
    method = f"mlflow.log_metric ({store})"
    reason = _importable("mlflow")
    if reason:
        return Result(method, points, repeats, status=reason)
    import mlflow

    for name in ("mlflow", "alembic"):  # mlflow sets its loggers' levels when imported
        logging.getLogger(name).setLevel(logging.WARNING)
    folder = tmp / f"mlflow-{store.split()[0]}"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}" if store.startswith("sqlite") else folder.as_uri()
    try:
        t = time.perf_counter()
        mlflow.set_tracking_uri(uri)
        exp = mlflow.create_experiment("bench", artifact_location=(folder / "art").as_uri())
        run = mlflow.start_run(experiment_id=exp)
        setup = time.perf_counter() - t
        try:

            def loop(values: list[float]) -> int:
                log_metric = mlflow.log_metric
                t0 = time.perf_counter_ns()
                for i, v in enumerate(values):
                    log_metric("loss", v, step=i)
                return time.perf_counter_ns() - t0

            res = measure(method, loop, points, repeats, warmup_points=max(1, points // 10))
        finally:
            mlflow.end_run()
        n = len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss"))
        res.note = f"{uri.split(':')[0]} store; start_run {setup:.1f} s; {n} points stored"
        return res
    except Exception as exc:
        return Result(method, points, repeats, status=f"failed: {type(exc).__name__}: {exc}")


def bench_wandb(points: int, repeats: int, tmp: Path) -> Result:
    method = 'wandb.log (mode="offline")'
    reason = _importable("wandb")
    if reason:
        return Result(method, points, repeats, status=reason)
    import wandb

    (tmp / "wandb").mkdir(exist_ok=True)
    try:
        t = time.perf_counter()
        run = wandb.init(
            mode="offline",
            dir=str(tmp / "wandb"),
            project="fairtrial-bench",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        setup = time.perf_counter() - t
        step = 0
        try:

            def loop(values: list[float]) -> int:
                nonlocal step
                log = wandb.log
                base = step
                t0 = time.perf_counter_ns()
                for i, v in enumerate(values):
                    log({"loss": v}, step=base + i)
                elapsed = time.perf_counter_ns() - t0
                step = base + len(values)
                return elapsed

            res = measure(method, loop, points, repeats, warmup_points=max(1, points // 10))
        finally:
            t = time.perf_counter()
            run.finish()
            finish = time.perf_counter() - t
        files = list((tmp / "wandb").rglob("*.wandb"))
        size = sum(f.stat().st_size for f in files)
        res.note = (
            f"init {setup:.1f} s, finish {finish:.1f} s; {step} steps, "
            f"{size / 1e6:.1f} MB .wandb file (written by the wandb-core process)"
        )
        return res
    except Exception as exc:
        return Result(method, points, repeats, status=f"failed: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------
# report


def print_report(info: dict[str, Any], results: list[Result], wall: float) -> None:
    print("machine")
    for key in (
        "cpu",
        "cores",
        "usable_cores",
        "load_average",
        "platform",
        "python",
        "executable",
        "fairtrial",
        "sqlalchemy",
        "mlflow",
        "wandb",
    ):
        print(f"  {key:<13} {info[key]}")
    print()
    width = max(len(r.method) for r in results)
    head = f"{'method':<{width}}  {'points':>7}  {'reps':>4}  {'ns/point':>12}  {'min..max':>19}"
    print(f"{head}  {'× append':>10}")
    print("-" * (len(head) + 12))
    for r in results:
        if r.status != "ok" or r.ns_per_point is None:
            print(f"{r.method:<{width}}  {r.points:>7}  {r.repeats:>4}  {r.status}")
            continue
        spread = f"{r.ns_min:,.0f}..{r.ns_max:,.0f}"
        ratio = "" if r.ratio is None else f"{r.ratio:,.{1 if r.ratio < 100 else 0}f}×"
        print(
            f"{r.method:<{width}}  {r.points:>7}  {r.repeats:>4}  {r.ns_per_point:>12,.1f}  "
            f"{spread:>19}  {ratio:>10}"
        )
    print()
    for r in results:
        if r.note:
            print(f"  {r.method}: {r.note}")
    print(f"  median ns/point over the repeats, after a warm-up; total wall time {wall:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200_000, help="N for append and ctx.log")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per method")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--ledger-points", type=int, default=50_000, help="N for the ledger path")
    p.add_argument("--mlflow-points", type=int, default=2_000, help="N for the MLflow file store")
    p.add_argument("--mlflow-sqlite-points", type=int, default=200, help="N for MLflow on SQLite")
    p.add_argument("--wandb-points", type=int, default=20_000, help="N for wandb offline")
    p.add_argument("--peer-repeat", type=int, default=3, help="timed repeats for MLflow and wandb")
    p.add_argument("--no-peers", action="store_true", help="skip MLflow and wandb")
    args = p.parse_args(argv)

    info = machine_info()
    start = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fairtrial-bench-") as d:
        tmp = Path(d)
        results.append(
            measure("list.append((step, value))", bare_append_loop(), args.points, args.repeat)
        )
        results.append(
            measure(
                "ctx.log, emit = no-op (buffer + convert)",
                ctx_loop(lambda: _context(lambda kind, payload: None)),
                args.points,
                args.repeat,
            )
        )
        results.append(bench_ctx_pipe(args.points, args.repeat))
        results.append(bench_ctx_ledger(args.ledger_points, args.repeat, tmp))
        if not args.no_peers:
            _quiet_peer_env(tmp)
            cwd = Path.cwd()
            os.chdir(tmp)  # whatever a peer writes next to itself stays in the temp folder
            try:
                for store, n in (
                    ("sqlite", args.mlflow_sqlite_points),
                    ("file store", args.mlflow_points),
                ):
                    results.append(bench_mlflow(store, n, args.peer_repeat, tmp))
                results.append(bench_wandb(args.wandb_points, args.peer_repeat, tmp))
            finally:
                os.chdir(cwd)
    wall = time.perf_counter() - start

    base = results[0].ns_per_point
    for r in results:
        if r.ns_per_point is not None and base:
            r.ratio = r.ns_per_point / base
    print_report(info, results, wall)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "wall_s": round(wall, 1),
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
