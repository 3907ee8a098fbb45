"""Hidden variables: captured differences between trials and experiments, arm isolation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from conftest import toy_spec
from fairtrial import diff as d
from fairtrial import provenance
from fairtrial.backends import InlineBackend
from fairtrial.ledger import Ledger
from fairtrial.ledger import schema as s
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

ARMS = "[arms.noisy]\nnoise = 0.3\n"
EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"


def run(path: Path, ledger: Ledger) -> str:
    spec = load_spec(path)
    run_experiment(spec, ledger, InlineBackend(), show_progress=False)
    return spec.experiment_id


def keys(result: dict[str, object], group: str) -> list[str]:
    return [r["key"] for r in result["groups"][group]]  # type: ignore[index]


def test_trials_differ_in_config_or_seeds_only(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    eid = run(write_spec(toy_spec(name="d", seeds=2, arms=ARMS)), ledger)
    exp = ledger.experiment(eid)
    base0, noisy0, base1 = (
        ledger.trial_at(eid, arm, seed)
        for arm, seed in (("baseline", 0), ("noisy", 0), ("baseline", 1))
    )
    arms = d.diff(d.trial_capture(ledger, base0, exp), d.trial_capture(ledger, noisy0, exp))
    assert arms["count"] == 1 and arms["groups"]["config"] == [{"key": "noise", "a": 0.0, "b": 0.3}]
    seeds = d.diff(d.trial_capture(ledger, base0, exp), d.trial_capture(ledger, base1, exp))
    assert set(keys(seeds, "seeds")) == {"index", "init", "data", "augment", "dropout"}
    assert seeds["groups"]["config"] == [] and seeds["groups"]["packages"] == []
    same = d.diff(d.trial_capture(ledger, base0, exp), d.trial_capture(ledger, base0, exp))
    assert same["identical"] and "no captured differences" in d.format_diff(same)


def test_experiments_differ_in_code_environment_and_config(
    write_spec: Callable[..., Path], ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = run(write_spec(toy_spec(name="a", seeds=2, arms=ARMS), name="a.toml"), ledger)
    recipe = write_spec(toy_spec(name="b", seeds=2), name="b.toml").parent / "toy.py"
    recipe.write_text(recipe.read_text() + "\n# a change after the first run\n")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setenv("HF_TOKEN", "secret-value")
    b = run(recipe.parent / "b.toml", ledger)
    result = d.diff(
        d.ledger_experiment_capture(ledger, ledger.experiment(a)),
        d.ledger_experiment_capture(ledger, ledger.experiment(b)),
    )
    assert "files/toy.py" in keys(result, "code")
    assert keys(result, "environment") == ["CUBLAS_WORKSPACE_CONFIG"]  # the token is never kept
    assert {"experiment.name", "arms.noisy.noise"} <= set(keys(result, "config"))
    assert result["groups"]["data"] == [] and result["groups"]["packages"] == []
    text = d.format_diff(result)
    assert "code (" in text and "environment (1)" in text and "no differences in: data" in text


def test_arm_isolation_names_what_else_differed(
    write_spec: Callable[..., Path], ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_spec(toy_spec(name="iso", seeds=3, arms=ARMS))
    eid = run(path, ledger)
    ok = d.arm_isolation(ledger, ledger.experiment(eid))
    assert ok["ok"] and ok["pairs"] == 3 and ok["arms"]["noisy"]["declared"] == ["noise"]
    assert ok["text"] == "arms differ only in their declared components (3 seed pairs checked)"
    # the proposed arm is re-run later, with another setting of the environment
    with ledger.engine.begin() as c:
        c.execute(
            update(s.trials)
            .where(s.trials.c.experiment_id == eid, s.trials.c.arm == "noisy")
            .values(status="interrupted")
        )
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    run(path, ledger)
    bad = d.arm_isolation(ledger, ledger.experiment(eid))
    assert not bad["ok"]
    found = {(u["group"], u["key"]) for u in bad["arms"]["noisy"]["undeclared"]}
    assert ("environment", "OMP_NUM_THREADS") in found
    assert all(u["seeds"] == [0, 1, 2] for u in bad["arms"]["noisy"]["undeclared"])
    assert "arm 'noisy' also differed from the baseline in" in bad["text"]
    assert "OMP_NUM_THREADS" in bad["text"]
    # an edited recipe can no longer differ between arms: every trial runs on the new code
    (path.parent / "toy.py").write_text((path.parent / "toy.py").read_text() + "\n# edited\n")
    run(path, ledger)
    after = d.arm_isolation(ledger, ledger.experiment(eid))
    assert not any(
        g == "code"
        for g, _ in found | {(u["group"], u["key"]) for u in after["arms"]["noisy"]["undeclared"]}
    )


def test_captured_env_drops_secrets_and_masks_url_passwords() -> None:
    env = {
        "OMP_NUM_THREADS": "2",
        "HF_TOKEN": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "FAIRTRIAL_STORE": "postgresql://me:hunter2@db/ledger",
        "PYTHONPATH": "/src",
        "HOME": "/home/me",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    assert provenance.captured_env(env) == {
        "CUDA_VISIBLE_DEVICES": "0",
        "FAIRTRIAL_STORE": "postgresql://me:***@db/ledger",
        "OMP_NUM_THREADS": "2",
        "PYTHONPATH": "/src",
    }


def test_code_snapshot_of_each_recipe_kind(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def train(config, ctx):\n    pass\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "skip.py").write_text("")
    own = provenance.code_snapshot("mine:train", None, tmp_path)
    # only what the recipe imports: helper.py is not imported by mine.py
    assert sorted(own["files"]) == ["mine.py"] and own["external"] == {}
    assert own["files"]["mine.py"] == (tmp_path / "mine.py").read_bytes()
    builtin = provenance.code_snapshot("fairtrial.recipes.mlp:train", None, tmp_path)
    assert builtin["files"] == {} and "fairtrial/recipes/mlp.py" in builtin["external"]
    assert "fairtrial/recipes/torchkit.py" in builtin["external"]  # the package's siblings
    command = provenance.code_snapshot(None, "python helper.py --lr {lr} missing.py", tmp_path)
    assert list(command["files"]) == ["helper.py"]
    lock = provenance.environment_lock()
    assert lock["packages"]["numpy"] and len(lock["sha256"]) == 64
    assert "numpy==" in lock["requirements"]


def test_cli_diff(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(toy_spec(name="cli-diff", seeds=2, arms=ARMS))
    env = {k: v for k, v in os.environ.items() if k != "FAIRTRIAL_STORE"}

    def ft(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EXE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
        )

    assert ft("run", str(spec), "--backend", "inline", "--no-report").returncode == 0
    out = ft("diff", "cli-diff/baseline/1", "cli-diff/noisy/1")
    assert out.returncode == 1, out.stderr
    assert "config (1)" in out.stdout and "noise: 0.0 → 0.3" in out.stdout
    same = ft("diff", "cli-diff", str(spec))
    assert same.returncode == 0 and "no captured differences" in same.stdout
    missing = ft("diff", "cli-diff/baseline/9", "cli-diff")
    assert missing.returncode == 2 and "no trial" in missing.stderr
