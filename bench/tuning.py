"""Fair tuning: what the tuning driver costs on top of the tuning trials it runs.

The suite's ``tuning`` section (``python bench/suite.py --only tuning``):

- the digits MLP tuned over its learning rate, 2 arms x 16 configurations, on the default
  backend (vectorized for this recipe), once with ``sampler = "random"`` (one round: every
  configuration asked at once) and once with ``"tpe"`` (its random start, then one
  configuration per arm at a time: the driver's busiest case). The first row of each pair is
  the time the tuning trials spent running (inside the backend, per tuning trial); the second
  is everything else the driver did per tuning trial (Optuna's ask and tell, writing and
  reading the tuning slots, checking each asked configuration against the stored one), with
  its ratio to the first.
- ``fairtrial run examples/tuning/spec.toml --also-untuned`` end to end in a fresh folder (a
  subprocess: start-up, 24 tuning, 20 compared and 20 untuned trials, the ledger writes).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from suite import Row

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
[experiment]
name = "tune-{sampler}"
task = "digits"
recipe = "mlp"
seeds = 2

[baseline]
optimizer = "sgd"
lr = 0.01
hidden = 64
epochs = {epochs}
momentum = 0.9

[arms.proposed]
momentum = 0.8

[tuning]
budget = {budget}
sampler = "{sampler}"
objective = "val_accuracy"

[tuning.space]
lr = {{ low = 1e-3, high = 1.0, log = true }}
"""


def _tune(folder: Path, sampler: str, budget: int, epochs: int) -> tuple[float, float, int]:
    """(seconds inside the backend, seconds of the driver besides, tuning trials run)."""
    from rich.console import Console

    import fairtrial.tuning.driver as driver
    from fairtrial.backends import choose_backend
    from fairtrial.ledger import Ledger
    from fairtrial.runner import register
    from fairtrial.spec import load_spec

    path = folder / f"tune-{sampler}.toml"
    path.write_text(SPEC.format(sampler=sampler, budget=budget, epochs=epochs))
    spec = load_spec(path)
    led = Ledger(folder / f"{sampler}.db")
    register(spec, led)
    inside = 0.0
    real = driver.run_rows

    def timed(*args: Any, **kwargs: Any) -> None:
        nonlocal inside
        t0 = time.perf_counter()
        try:
            real(*args, **kwargs)
        finally:
            inside += time.perf_counter() - t0

    # taken once per run, tuned or not, and handed to the driver (as `fairtrial run` does)
    from fairtrial.plan import spec_code_snapshot

    snapshot = spec_code_snapshot(spec)
    driver.run_rows = timed  # type: ignore[assignment]
    try:
        quiet = Console(file=io.StringIO())
        backend = choose_backend(spec)[0]
        t0 = time.perf_counter()
        out = driver.tune(spec, led, backend, quiet, (False, False, None, False), snapshot)
        total = time.perf_counter() - t0
    finally:
        driver.run_rows = real  # type: ignore[assignment]
        led.close()
    if out.stopped or out.summary is None:
        raise RuntimeError(f"tuning stopped: {out.stopped}")
    return inside, total - inside, out.summary.ran


def bench_tuning(quick: bool, tmp: Path) -> list[Row]:
    budget, epochs = (8, 3) if quick else (16, 8)
    rows: list[Row] = []
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import optuna"], check=True)
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    optuna_import = bare - (time.perf_counter() - t0)
    from fairtrial.tuning.space import import_optuna

    import_optuna()
    for sampler in ("random", "tpe"):
        folder = tmp / sampler
        folder.mkdir()
        inside, driver, n = _tune(folder, sampler, budget, epochs)
        per_trial, per_driver = inside / n, driver / n
        note = f"{n} tuning trials, 2 arms x {budget}, {epochs} epochs"
        rows.append(Row("tuning", f"{sampler}: tuning trial (in the backend)", per_trial, "s",
                        1.0, note))  # fmt: skip
        rows.append(Row("tuning", f"{sampler}: driver overhead per tuning trial", per_driver,
                        "s", per_driver / per_trial, "Optuna ask/tell, slots, checks"))  # fmt: skip
    rows.append(Row("tuning", "importing Optuna (once per tuned run)", optuna_import, "s", None,
                    "a fresh interpreter, less one that imports nothing"))  # fmt: skip
    folder = tmp / "example"
    folder.mkdir()
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fairtrial.cli", "run", str(ROOT / "examples/tuning/spec.toml"),
         "--also-untuned", "--no-report", "--store", str(folder / "ledger.db")],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    rows.append(Row("tuning", "examples/tuning end to end (--also-untuned)",
                    time.perf_counter() - t0, "s", None, "fresh store, a subprocess"))  # fmt: skip
    return rows
