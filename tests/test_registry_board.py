"""The leaderboard's order and the indexes it reads, on a real store (SQLite and PostgreSQL).

Rows are written straight into the registry's tables (the ingest path is tested with real
bundles elsewhere), so that the order can be checked against missing values and ties.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, inspect, text

from fairtrial.server import Registry
from fairtrial.server import schema as S


def _experiment(i: int) -> dict[str, Any]:
    return {
        "id": f"{i:064x}",
        "experiment_id": f"{i:012x}",
        "name": f"exp-{i}",
        "task": "digits",
        "metric": "accuracy",
        "direction": "max",
        "seeds": 3,
        "claim": "",
        "recipe": "mlp",
        "baseline_key": "k1" if i % 3 else "k0",
        "uploaded_at": float(i),
        "hardware": "cpu box",
        "device": "cpu",
        "preregistered": "no",
        "verdicts": "",
        "trials": 6,
        "search": f"exp-{i}",
        "doc_json": "{}",
        "figures_json": "{}",
        "capture_json": "{}",
    }


def _entry(i: int, score: float | None, time: float | None) -> dict[str, Any]:
    return {
        "experiment": f"{i:064x}",
        "task": "digits",
        "name": f"exp-{i}",
        "arm": "arm",
        "kind": "arm",
        "metric": "accuracy",
        "direction": "max",
        "n": 3,
        "failed_trials": 0,
        "mean": None if score is None else score + 0.01,
        "low": score,
        "high": None if score is None else score + 0.02,
        "score": score,
        "wall_time_mean_s": time,
        "hardware": "cpu box",
        "device": "cpu",
        "baseline_key": "k1" if i % 3 else "k0",
        "uploaded_at": float(i),
    }


@pytest.fixture
def board(store_url: str) -> Any:
    """A registry with 12 entries in one task: ties, and missing scores and times."""
    reg = Registry(store_url)
    scores = [0.8, None, 0.9, 0.8, None, 0.7, 0.9, 0.8, 0.6, None, 0.95, 0.8]
    times = [2.0, 1.0, None, 3.0, 0.5, None, 2.0, 1.5, 4.0, None, 2.5, 1.0]
    with reg.engine.begin() as c:
        c.execute(insert(S.experiments), [_experiment(i) for i in range(12)])
        c.execute(insert(S.entries), [_entry(i, scores[i], times[i]) for i in range(12)])
    yield reg, scores, times
    reg.close()


def _names(board: dict[str, Any]) -> list[int]:
    return [int(r["name"].split("-")[1]) for r in board["rows"]]


def expected(values: list[float | None], descending: bool) -> list[int]:
    """Experiment numbers best first: present values by ``descending``, ties in insertion
    (id) order, missing values last."""
    present = [i for i, v in enumerate(values) if v is not None]
    present.sort(key=lambda i: (-values[i] if descending else values[i], i))  # type: ignore[operator]
    return present + [i for i, v in enumerate(values) if v is None]


def test_missing_values_sort_last_and_ties_keep_upload_order(board: Any) -> None:
    reg, scores, times = board
    assert _names(reg.leaderboard("digits")) == expected(scores, descending=True)
    assert _names(reg.leaderboard("digits", order="asc")) == expected(scores, descending=False)
    assert _names(reg.leaderboard("digits", sort="time")) == expected(times, descending=False)
    assert _names(reg.leaderboard("digits", sort="time", order="desc")) == expected(
        times, descending=True
    )
    # pages are slices of the same order, and the total counts every entry
    full = expected(scores, descending=True)
    got = [_names(reg.leaderboard("digits", limit=5, offset=k)) for k in (0, 5, 10)]
    assert got == [full[0:5], full[5:10], full[10:12]]
    assert reg.leaderboard("digits", limit=5, offset=10)["total"] == 12
    assert reg.leaderboard("digits")["reference_baseline"] == "k1"  # 8 of 12 experiments


def test_default_leaderboard_reads_only_the_board_index(tmp_path: Path) -> None:
    """SQLite's plan for the default page: the board index, walked in order (no sort of every
    entry, no row lookups)."""
    reg = Registry(tmp_path / "registry.db")
    with reg.engine.connect() as c:
        plan = " ".join(
            str(row[-1])
            for row in c.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT id FROM registry_entries WHERE task = 'digits' "
                    "AND metric = 'accuracy' ORDER BY verified DESC, score DESC NULLS LAST, id "
                    "LIMIT 50"
                )
            )
        )
    reg.close()
    assert "COVERING INDEX registry_entries_board" in plan
    assert "TEMP B-TREE FOR ORDER BY" not in plan  # only "RIGHT PART OF ORDER BY" (the id)


def test_an_older_registry_gets_the_new_indexes_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    Registry(path).close()
    reg = Registry(path)
    with reg.engine.begin() as c:
        c.execute(text("DROP INDEX registry_entries_board"))
        c.execute(text("DROP INDEX registry_experiments_task_baseline"))
    reg.close()
    reg = Registry(path)
    names = {i["name"] for t in ("registry_entries", "registry_experiments")
             for i in inspect(reg.engine).get_indexes(t)}  # fmt: skip
    reg.close()
    assert {"registry_entries_board", "registry_experiments_task_baseline"} <= names
