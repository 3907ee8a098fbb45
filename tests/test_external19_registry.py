"""The registry shows a recipe-evaluated experiment as such, and ranks it apart from sealed ones.

A real ``fairtrial serve`` (SQLite and PostgreSQL) gets two real bundles: one on an external task
(the recipe reported its own scores) and one on a built-in task (fairtrial scored the sealed test
split). The external one is marked on its page, in its task's row, in search and on its board,
which holds it alone; nothing is re-scored for it, and the sealed board is untouched by it.
"""

from __future__ import annotations

import textwrap
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from conftest import RECIPES, RegistryServer, toy_spec
from fairtrial.backends import InlineBackend
from fairtrial.bundle import write_bundle
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec
from test_external19_run import RECIPE, SPEC
from test_registry import call

pytest.importorskip("fastapi")
MARK = "data-recipe-evaluated"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"external", "sealed"} -> a bundle of a real run (inline, 6 seeds, 2 arms each)."""
    root = tmp_path_factory.mktemp("external-bundles")
    (root / "toy.py").write_text((RECIPES / "toy.py").read_text())
    (root / "sealed.toml").write_text(
        textwrap.dedent(toy_spec("sealed-toy", 6, "[arms.noisy]\nnoise = 0.3\n"))
    )
    (root / "ext_recipe.py").write_text(RECIPE)
    (root / "external.toml").write_text(
        SPEC.format(name="own-images", seeds=6, arms="[arms.better]\nbonus = 0.15\n")
    )
    led = Ledger(root / "ledger.db")
    out = {}
    for key in ("external", "sealed"):
        spec = load_spec(root / f"{key}.toml")
        run_experiment(spec, led, InlineBackend(), show_progress=False)
        out[key] = root / f"{key}.tar.gz"
        write_bundle(led, led.experiment(spec.experiment_id), out[key])
    led.close()
    return out


def _get(srv: RegistryServer, path: str) -> Any:
    status, body, _ = call(srv, "GET", path)
    assert status == 200, (path, body)
    return body


def test_registry_marks_and_ranks_recipe_evaluated_results(
    registry_server: RegistryServer, bundles: dict[str, Path]
) -> None:
    srv = registry_server
    ids = {}
    for key, path in bundles.items():
        status, body, _ = call(srv, "POST", "/api/bundles", path.read_bytes(), token=srv.token)
        assert status == 201, body
        ids[key] = body["id"]
    task = "external:own-images"
    quoted = urllib.parse.quote(task, safe="")

    # its board holds it alone, marked on the board and on every row, never verified
    board = _get(srv, f"/api/tasks/{quoted}/leaderboard")
    assert board["evaluation"] == "recipe" and board["total"] == 2
    assert {r["experiment"] for r in board["rows"]} == {ids["external"]}
    assert all(r["evaluation"] == "recipe" and r["verified"] is False for r in board["rows"])
    # the external arm scores above every sealed entry, yet no sealed board lists it, and the
    # sealed entries are verified: they rank first wherever verified entries are ranked
    sealed = _get(srv, "/api/tasks/digits/leaderboard")
    assert "evaluation" not in sealed and sealed["total"] == 2
    assert {r["experiment"] for r in sealed["rows"]} == {ids["sealed"]}
    assert all(r["verified"] is True and "evaluation" not in r for r in sealed["rows"])
    assert max(r["mean"] for r in board["rows"]) > max(r["mean"] for r in sealed["rows"])

    # the experiment: the registry's own analysis carries the label; nothing was re-scored
    exp = _get(srv, f"/api/experiments/{ids['external']}")
    assert exp["evaluation"] == "recipe" and exp["verified"] is False
    assert exp["analysis"]["experiment"]["evaluation"] == "recipe"
    assert [c["verdict"] for c in exp["analysis"]["comparisons"]] == ["better"]
    assert exp["unverifiable"].startswith(f"task '{task}' was evaluated by the recipe")
    assert "evaluation" not in _get(srv, f"/api/experiments/{ids['sealed']}")
    found = _get(srv, "/api/experiments")["experiments"]
    assert {e["id"]: e.get("evaluation") for e in found} == {
        ids["external"]: "recipe",
        ids["sealed"]: None,
    }

    # the pages: the mark on the experiment's page, its task's row, its board and its rows
    page = _get(srv, f"/experiments/{ids['external']}")
    assert MARK in page and "evaluated by the recipe, not sealed" in page
    assert "Evaluated by the recipe, not sealed: the recipe computed" in page
    assert MARK not in _get(srv, f"/experiments/{ids['sealed']}")
    html = _get(srv, f"/tasks/{quoted}")
    assert html.count(MARK) == 1 + len(board["rows"]) and "ranked among themselves" in html
    assert MARK not in _get(srv, "/tasks/digits")
    home = _get(srv, "/")
    row = next(line for line in home.splitlines() if f">{task}</a>" in line and "<td" in line)
    assert MARK in row
