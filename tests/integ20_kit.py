"""Runs of the Lightning and Hugging Face examples for the integration tests: the shipped
spec with a smaller budget, through ``fairtrial.api.run``, a SQLite ledger and the inline
backend (in this process: the frameworks are imported once)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path
from typing import Any

from fairtrial import api
from fairtrial.backends import InlineBackend
from fairtrial.context import TrialContext
from fairtrial.ledger import Ledger
from fairtrial.spec import Spec, load_spec
from fairtrial.tasks import get_task

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Run:
    """A finished experiment, per (arm, seed): its trial, logged series and compute record;
    and what the run printed on stdout."""

    def __init__(self, spec_path: Path, store: Path) -> None:
        self.spec: Spec = load_spec(spec_path)
        ledger = Ledger(store)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                self.summary = api.run(self.spec, ledger, backend=InlineBackend())
            rows = ledger.trials(self.spec.experiment_id)
            self.trials = {(t.arm, t.seed): t for t in rows}
            self.series: dict[tuple[str, int], dict[str, list[tuple[int, float]]]] = {}
            for t in rows:
                curves: dict[str, list[tuple[int, float]]] = {}
                for _, step, _, name, value in ledger.metrics(t.id):
                    curves.setdefault(name, []).append((step, value))
                self.series[(t.arm, t.seed)] = curves
            by_id = {t.id: (t.arm, t.seed) for t in rows}
            self.compute = {by_id[k]: v for k, v in ledger.compute(self.spec.experiment_id).items()}
        finally:
            ledger.close()
        self.stdout = out.getvalue()


def example(name: str, folder: Path, **changes: Any) -> Path:
    """Copy ``examples/NAME`` into ``folder``; set the spec's keys in ``changes`` (``seeds``,
    baseline options); returns the spec's path."""
    shutil.copytree(EXAMPLES / name, folder, dirs_exist_ok=True)
    path = folder / "spec.toml"
    text = path.read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        assert n == 1, key
    path.write_text(text)
    return path


def bad_recipe_spec(spec_path: Path, recipe: str) -> Path:
    """The spec at ``spec_path`` with another recipe, beside it."""
    text = spec_path.read_text()
    text = re.sub(r'(?m)^recipe = ".*"$', f'recipe = "{recipe}"', text)
    text = re.sub(r"(?m)^name = \"(.*)\"$", r'name = "\1-fixed-seed"', text)
    out = spec_path.with_name("fixed.toml")
    out.write_text(text)
    return out


def rerun(run: Run, train: Any, arm: str, seed: int, workdir: Path) -> dict[str, list[float]]:
    """Train trial (``arm``, ``seed``) again in this process, outside the runner: its logged
    series by name."""
    config = dict(run.spec.arms[arm].config)
    points: list[tuple[Any, ...]] = []

    def emit(kind: str, payload: Any) -> None:
        if kind == "metrics":
            points.extend(payload)

    ctx = TrialContext(
        config=config,
        seed=seed,
        root_seed=run.spec.root_seed,
        task=get_task(run.spec.task),
        emit=emit,
        arm=arm,
        workdir=workdir,
    )
    train(config, ctx)
    ctx.flush()
    curves: dict[str, list[float]] = {}
    for _, _, name, value in points:
        curves.setdefault(name, []).append(value)
    return curves
