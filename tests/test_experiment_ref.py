"""An EXPERIMENT reference that several experiments share lists them and asks for the id."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RECIPES, toy_spec
from fairtrial.backends import InlineBackend
from fairtrial.errors import ExperimentNotFound
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"


def ft(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FAIRTRIAL_STORE", None)
    return subprocess.run(
        [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture
def twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Two experiments named "twin" (different baselines, so different ids) in one store."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(RECIPES / "toy.py", tmp_path / "toy.py")
    store = tmp_path / "ledger.db"
    led = Ledger(store)
    ids = []
    for i, noise in enumerate(("0.0", "0.1")):
        path = tmp_path / f"twin{i}.toml"
        path.write_text(toy_spec(name="twin", seeds=2).replace("noise = 0.0", f"noise = {noise}"))
        spec = load_spec(path)
        run_experiment(spec, led, InlineBackend(), show_progress=False)
        ids.append(spec.experiment_id)
    led.close()
    return store, ids


def test_the_ledger_lists_experiments_sharing_a_name(twins: tuple[Path, list[str]]) -> None:
    store, ids = twins
    led = Ledger(store)
    with pytest.raises(ExperimentNotFound) as err:
        led.find_experiment("twin")
    text = str(err.value)
    assert text.startswith("'twin' matches 2 experiments in sqlite:///")
    assert "give the id (or the spec file) of the one you mean: " in text
    newest, oldest = ids[1], ids[0]
    assert text.index(newest) < text.index(oldest)  # newest first
    for eid in ids:
        assert f"{eid} (twin, last run 20" in text
    assert text.count(", 2 seeds, 2/2 trials done)") == 2
    assert led.find_experiment(ids[0]).id == ids[0]  # an exact id still works
    assert led.find_experiment(ids[1][:6]).id == ids[1]  # and an unshared prefix
    led.close()


@pytest.mark.parametrize(
    "command",
    [["report", "twin"], ["status", "twin"], ["bundle", "twin"], ["diff", "twin", "twin"]],
)
def test_every_command_taking_an_experiment_asks_for_the_id(
    command: list[str], twins: tuple[Path, list[str]], tmp_path: Path
) -> None:
    store, ids = twins
    out = ft(*command, "--store", str(store), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("error: 'twin' matches 2 experiments")
    assert all(eid in lines[0] for eid in ids)


def test_an_id_or_a_spec_path_still_picks_one(
    twins: tuple[Path, list[str]], tmp_path: Path
) -> None:
    store, ids = twins
    by_id = ft("report", ids[0], "--store", str(store), "--format", "json", cwd=tmp_path)
    assert by_id.returncode == 0, by_id.stderr
    assert f'"id": "{ids[0]}"' in by_id.stdout
    by_path = ft("report", "twin1.toml", "--store", str(store), "--format", "json", cwd=tmp_path)
    assert by_path.returncode == 0, by_path.stderr
    assert f'"id": "{ids[1]}"' in by_path.stdout
    trial = ft("diff", f"{ids[0]}/baseline/0", f"{ids[1]}/baseline/0", "--store", str(store),
               cwd=tmp_path)  # fmt: skip
    assert trial.returncode == 1 and "noise" in trial.stdout  # they differ by their config
