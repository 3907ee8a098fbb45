"""Batched trials: whole experiments (arms and seeds) as a few batched models.

The suite's ``batched`` and ``scale`` sections (``python bench/suite.py --only batched scale``):

``batched``  the flagship demo's spec (4 arms x 10 seeds of the digits MLP, as shipped):
             one trial alone (the yardstick), then all 40 trials on the local backend
             (worker processes, the baseline) and vectorized; then 10 seeds of each other
             built-in torch recipe that has a batched form (``cnn1d`` on mnist1d,
             ``transformer`` on modular_addition) against one seed alone. Every vectorized
             run is checked against a sequential run of the same trials (local workers of
             one thread; inline on one thread): the note says whether every per-seed result
             is identical. A profiled run of each vectorized experiment says how long its
             matrix products, convolutions and attention, and its optimizer updates, take
             alone: the arithmetic that no batching removes.
``scale``    the demo's baseline MLP at 2 to 100 seeds: worker processes (baseline) against
             vectorized, at each size.

Times are whole runs (``run_experiment`` into a fresh SQLite ledger), so worker start-up,
ledger writes and the grouping are included.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

from suite import Row, _ratios, _run


def _results(db: Path, eid: str) -> dict[tuple[str, int], float | None]:
    from fairtrial.ledger import Ledger

    led = Ledger(db)
    try:
        return {(t.arm, t.seed): t.result for t in led.trials(eid)}
    finally:
        led.close()


def _demo_spec(folder: Path, name: str, seeds: int | None = None, arms: bool = True) -> Any:
    """The demo's spec as shipped (or its baseline alone, or with another seed count)."""
    from fairtrial.spec import load_spec

    text = resources.files("fairtrial").joinpath("examples/demo.toml").read_text()
    text = text.replace('name = "digits-layernorm-warmup"', f'name = "{name}"')
    if seeds is not None:
        text = text.replace("seeds = 10", f"seeds = {seeds}")
    if not arms:
        text = text.split("[arms.proposed]")[0]
    path = folder / f"{name}.toml"
    path.write_text(text)
    return load_spec(path)


def _recipe_spec(folder: Path, recipe: str, task: str, seeds: int, baseline: str) -> Any:
    from fairtrial.spec import load_spec

    path = folder / f"{recipe}-{seeds}.toml"
    path.write_text(
        f'[experiment]\nname = "{recipe}-{seeds}"\ntask = "{task}"\nrecipe = "{recipe}"\n'
        f'seeds = {seeds}\nmetric = "accuracy"\n\n[baseline]\n{baseline}\n'
    )
    return load_spec(path)


#: the other built-in torch recipes, on their task, at the options the bench runs
RECIPES = {
    "cnn1d": ("mnist1d", "epochs = {epochs}"),
    "transformer": ("modular_addition", "steps = {steps}"),
}


def bench_batched(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import InlineBackend, LocalBackend, make_backend
    from fairtrial.backends.local import available_cores
    from fairtrial.backends.vectorized import VectorizedBackend
    from fairtrial.execute import resolve_recipe, vectorized_form
    from fairtrial.recipes import BUILTIN_RECIPES

    cores = available_cores()
    one = _demo_spec(tmp, "one", seeds=2, arms=False)
    _run(one, InlineBackend(), tmp / "warm.db")  # imports and first calls, untimed
    lone = _run(one, InlineBackend(), tmp / "one.db") / 2
    demo = _demo_spec(tmp, "demo")
    seq_db, vec_db = tmp / "demo-local.db", tmp / "demo-vec.db"
    local = _run(demo, LocalBackend(workers=cores, threads=1), seq_db)
    vec = _run(demo, VectorizedBackend(threads=cores), vec_db)
    same = _results(seq_db, demo.experiment_id) == _results(vec_db, demo.experiment_id)
    rows = [
        Row("batched", "one demo trial alone (inline)", lone, "s"),
        Row("batched", f"demo, 40 trials: local, {cores} workers x 1 thread", local, "s"),
        Row(
            "batched",
            f"demo, 40 trials: vectorized, 1 process x {cores} threads",
            vec,
            "s",
            note=f"{vec / lone:.1f}x one trial; {local / vec:.1f}x faster than local; "
            + ("per-seed results identical" if same else "PER-SEED RESULTS DIFFER"),
        ),
    ]
    _ratios(rows[1:])
    rows += _floor(demo, tmp / "demo-prof.db", lone, "demo")
    for recipe, (task, options) in RECIPES.items():
        if vectorized_form(resolve_recipe(BUILTIN_RECIPES[recipe], None)) is None:
            rows.append(Row("batched", f"{recipe}: 10 seeds", None, "s", note="no batched form"))
            continue
        baseline = options.format(epochs=3 if quick else 20, steps=300 if quick else 3000)
        two = _recipe_spec(tmp, recipe, task, 2, baseline)
        _run(two, InlineBackend(), tmp / f"{recipe}-warm.db")
        alone = _run(two, InlineBackend(), tmp / f"{recipe}-one.db") / 2
        ten = _recipe_spec(tmp, recipe, task, 10, baseline)
        seq_db, vec_db = tmp / f"{recipe}-seq.db", tmp / f"{recipe}-vec.db"
        seq = _run(ten, make_backend("inline", threads=1), seq_db)
        vec = _run(ten, VectorizedBackend(threads=cores), vec_db)
        batched = _results(vec_db, ten.experiment_id)
        # A lone run's last bits may depend on how many threads its kernels use, and so may
        # a batched member's: say which sequential runs the batched members match.
        same = [1] if _results(seq_db, ten.experiment_id) == batched else []
        if cores > 1:
            again = tmp / f"{recipe}-seq{cores}.db"
            _run(ten, make_backend("inline", threads=cores), again)
            if _results(again, ten.experiment_id) == batched:
                same.append(cores)
        match = (
            "per-seed results identical to sequential runs on "
            + " and ".join(f"{t} thread(s)" for t in same)
            if same
            else "PER-SEED RESULTS DIFFER from sequential runs"
        )
        rows += _ratios(
            [
                Row("batched", f"{recipe} on {task}: one seed alone", alone, "s"),
                Row("batched", f"{recipe}: 10 seeds sequential (1 thread)", seq, "s"),
                Row(
                    "batched",
                    f"{recipe}: 10 seeds vectorized",
                    vec,
                    "s",
                    note=f"{vec / alone:.1f}x one seed; {match}",
                ),
            ]
        )
        rows += _floor(ten, tmp / f"{recipe}-prof.db", alone, recipe)
    return rows


#: the kernels that do a model's arithmetic: matrix products (linear layers, forward and
#: backward) by name, convolutions and attention (forward and backward) by a part of it
MATMULS = ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm")
KERNELS = ("convolution", "attention")


def _floor(spec: Any, db: Path, lone: float, what: str) -> list[Row]:
    """Where a vectorized run's time goes (one more run, under ``torch.profiler``): its
    arithmetic kernels and its optimizer updates, which every member computes exactly as its
    lone run does, so no batching makes them cheaper than the arithmetic itself."""
    from torch.profiler import ProfilerActivity, profile

    from fairtrial.backends.local import available_cores
    from fairtrial.backends.vectorized import VectorizedBackend

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _run(spec, VectorizedBackend(threads=available_cores()), db)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    kernels = [e for e in events if e.key in MATMULS or any(k in e.key for k in KERNELS)]
    arithmetic = sum(e.self_cpu_time_total for e in kernels) / 1e6
    update = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#")) / 1e6
    return [
        Row(
            "batched",
            f"{what} vectorized, profiled: its matrix products, convolutions, attention alone",
            arithmetic,
            "s",
            note=f"{arithmetic / lone:.1f}x one trial; {arithmetic / total:.0%} of the profile",
        ),
        Row(
            "batched",
            f"{what} vectorized, profiled: its optimizer updates alone",
            update,
            "s",
            note=f"{update / lone:.1f}x one trial; {update / total:.0%} of the profile",
        ),
    ]


def bench_scale(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.backends import LocalBackend
    from fairtrial.backends.local import available_cores
    from fairtrial.backends.vectorized import VectorizedBackend

    cores = available_cores()
    rows: list[Row] = []
    for n in (2, 10, 100) if quick else (2, 5, 10, 20, 50, 100):
        spec = _demo_spec(tmp, f"scale{n}", seeds=n, arms=False)
        local = _run(spec, LocalBackend(workers=cores, threads=1), tmp / f"l{n}.db")
        vec = _run(spec, VectorizedBackend(threads=cores), tmp / f"v{n}.db")
        pair = _ratios(
            [
                Row("scale", f"{n} seeds: local, {cores} workers", local, "s"),
                Row("scale", f"{n} seeds: vectorized", vec, "s"),
            ]
        )
        pair[1].note = f"{local / vec:.1f}x faster" if vec < local else "SLOWER than local"
        rows += pair
    return rows


if __name__ == "__main__":
    sys.exit("run it through the suite: python bench/suite.py --only batched scale")
