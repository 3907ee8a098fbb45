"""The CLI end to end, in real subprocesses, as a user types it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import toy_spec

EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"


def ft(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FAIRTRIAL_STORE", None)
    out = subprocess.run(
        [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def test_run_status_report_plan(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    arms = '[arms.noisy]\nnoise = 0.3\n[arms.noisier]\nnoise = 0.6\nmode = "raise"\n'
    spec = write_spec(toy_spec(name="cli-toy", seeds=3, arms=arms))
    plan = ft("plan", str(spec), cwd=tmp_path).stdout
    assert "3 arms × 3 seeds = 9 trials" in plan and "noise=0.3" in plan
    assert "identical for every arm" in plan

    run = ft("run", str(spec), cwd=tmp_path, ok=False)
    assert run.returncode == 1, "three trials failed: the exit status says so"
    assert "ran 9 trials" in run.stderr and "6 finished, 3 failed" in run.stderr
    assert "noisy" in run.stdout and "Verdicts" in run.stdout
    assert (tmp_path / ".fairtrial" / "ledger.db").exists(), "the default store is ./.fairtrial"

    status = ft("status", cwd=tmp_path).stdout
    assert "cli-toy" in status and "6/9" in status
    detail = ft("status", "cli-toy", cwd=tmp_path).stdout
    assert "ValueError: boom from the recipe" in detail

    doc = json.loads(ft("report", "cli-toy", "--format", "json", cwd=tmp_path).stdout)
    assert set(doc) >= {"experiment", "arms", "comparisons", "ablations", "provenance", "settings"}
    e = doc["experiment"]
    assert (e["name"], e["task"], e["metric"], e["direction"]) == (
        "cli-toy", "digits", "accuracy", "max",
    )  # fmt: skip
    base = doc["arms"]["baseline"]
    assert base["n"] == 3 and base["failed"] == 0 and base["seeds"] == [0, 1, 2]
    assert len(base["values"]) == 3 and base["interval"][0] <= base["mean"] <= base["interval"][1]
    assert doc["arms"]["noisier"]["failed"] == 3 and doc["arms"]["noisier"]["n"] == 0
    comp = next(c for c in doc["comparisons"] if c["arm"] == "noisy")
    paired = [b - a for a, b in zip(base["values"], doc["arms"]["noisy"]["values"], strict=True)]
    assert comp["n_pairs"] == 3 and comp["effect"] == pytest.approx(sum(paired) / 3, abs=1e-5)

    # the same experiment by id and by spec path; Markdown too
    by_id = json.loads(ft("report", e["id"], "--format", "json", cwd=tmp_path).stdout)
    assert by_id["arms"] == doc["arms"]
    md = ft("report", str(spec), "--format", "md", cwd=tmp_path).stdout
    assert "| baseline |" in md
    out = tmp_path / "r.json"
    ft("report", "cli-toy", "--format", "json", "-o", str(out), cwd=tmp_path)
    assert json.loads(out.read_text())["arms"] == doc["arms"]
    page = tmp_path / "r.html"
    ft("report", "cli-toy", "--format", "html", "-o", str(page), cwd=tmp_path)
    assert page.read_text().startswith("<!DOCTYPE html>") and "<svg" in page.read_text()
    tex = ft("report", "cli-toy", "--format", "tex", cwd=tmp_path).stdout
    assert r"\begin{tabular}" in tex and "noisy" in tex
    worst = ft("report", "cli-toy", "--format", "json", "--failures", "worst", cwd=tmp_path)
    # every failed seed scores the worst score any trial reached
    lowest = min(v for a in doc["arms"].values() for v in a["values"])
    assert json.loads(worst.stdout)["arms"]["noisier"]["values"] == [lowest] * 3
    power = ft("plan", str(spec), cwd=tmp_path).stdout
    assert "power: noisy vs baseline" in power
    # running again resumes: nothing left to do
    again = ft("run", str(spec), "--resume", "--no-report", cwd=tmp_path, ok=False)
    assert "ran 0 trials" in again.stderr and "9 were already in the store" in again.stderr
    assert again.returncode == 1 and "--retry-failed" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "nothing-here"], "no experiment 'nothing-here'"),
        (["run", "missing.toml"], "missing.toml: no such spec file"),
        (["run", "bad.toml"], "bad.toml:4: [experiment] seeds = 1: must be at least 2"),
        (["run", "good.toml", "--resume"], "was never started in this store"),
        (["run", "good.toml", "--store", "postgresql://x@127.0.0.1:1/db?connect_timeout=1"],
         "cannot open store"),
        (["report", "good.toml"], "has not been run in this store"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_and_exit_2(
    write_spec: Callable[..., Path], tmp_path: Path, args: list[str], message: str
) -> None:
    write_spec('[experiment]\nname = "b"\ntask = "digits"\nseeds = 1\n', "bad.toml")
    write_spec(toy_spec(name="good"), "good.toml")
    out = ft(*args, cwd=tmp_path, ok=False)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_tasks_and_recipes_listings(tmp_path: Path) -> None:
    tasks = json.loads(ft("tasks", "--json", cwd=tmp_path).stdout)
    names = {t["name"] for t in tasks}
    assert {"digits", "breast_cancer", "mnist1d", "modular_addition"} <= names
    digits = next(t for t in tasks if t["name"] == "digits")
    assert digits["sizes"] == {"train": 1078, "val": 359, "test": 360}
    assert len(digits["checksum"]) == 64
    assert "mnist1d" in ft("tasks", cwd=tmp_path).stdout
    recipes = ft("recipes", cwd=tmp_path).stdout
    for name in ("logistic", "gradient_boosting", "mlp", "cnn1d", "transformer"):
        assert name in recipes
    assert "warmup_steps" in recipes and "label_smoothing" in recipes


def test_a_changed_task_is_not_mixed_into_an_experiment(tmp_path: Path) -> None:
    """The same spec on changed data runs anew, instead of pooling trials from two datasets."""
    module = tmp_path / "drifting.py"
    source = (
        "import numpy as np\nfrom fairtrial import Task\n\n"
        "def make():\n"
        "    rng = np.random.Generator(np.random.PCG64(SEED))\n"
        "    x = rng.normal(size=(200, 3)); y = (x[:, 0] > 0).astype(np.int64)\n"
        "    return Task.from_arrays('drifting', x, y)\n"
    )
    module.write_text(source.replace("SEED", "1"))
    spec = tmp_path / "s.toml"
    spec.write_text(
        '[experiment]\nname = "d"\ntask = "drifting:make"\nrecipe = "logistic"\nseeds = 2\n'
        "[baseline]\nC = 1.0\n[arms.weak]\nC = 0.01\n"
    )
    ft("run", str(spec), "--no-report", cwd=tmp_path)
    module.write_text(source.replace("SEED", "2"))
    out = ft("run", str(spec), "--no-report", cwd=tmp_path)
    assert "task 'drifting:make' data changed" in out.stderr and "ran 4 trials" in out.stderr
    doc = json.loads(ft("report", "d", "--format", "json", cwd=tmp_path).stdout)
    assert all(a["n"] == 2 for a in doc["arms"].values())
