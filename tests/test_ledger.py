"""The ledger on real SQLite and PostgreSQL: the same behaviour on both."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from fairtrial.errors import ExperimentNotFound, LedgerError
from fairtrial.ledger import Ledger
from fairtrial.ledger import schema as s
from fairtrial.plan import TrialPlan


def _experiment(ledger: Ledger, eid: str = "abc123def456", name: str = "exp") -> None:
    ledger.upsert_experiment(
        experiment_id=eid, name=name, spec_hash=eid + "0" * 52, spec={"k": 1},
        arms={"arms": [{"name": "baseline", "kind": "baseline", "components": {}}],
              "ablations": []},
        spec_path=None, task="digits", task_checksum="c" * 64, metric="accuracy",
        direction="max", seeds=2, root_seed=0,
    )  # fmt: skip


def _plans(eid: str = "abc123def456") -> list[TrialPlan]:
    return [
        TrialPlan(f"{eid}/baseline/{i}", eid, "baseline", i, {"lr": 0.1}, {"init": i})
        for i in range(2)
    ]


def test_round_trip(ledger: Ledger) -> None:
    _experiment(ledger)
    assert ledger.add_trials(_plans()) == 2
    assert ledger.add_trials(_plans()) == 0, "adding the same trials twice adds nothing"
    tid = "abc123def456/baseline/0"
    assert ledger.claim(tid, 0, "host:1", lease=60) == 1
    ledger.add_metrics(tid, 1, [(0, 0.1, "loss", 2.5), (1, 0.2, "loss", math.nan)])
    ledger.add_metrics(tid, 1, [(2, 0.3, "loss", math.inf)])
    pid = ledger.put_provenance({"python": "3.11", "packages": {"numpy": "2"}})
    assert ledger.put_provenance({"packages": {"numpy": "2"}, "python": "3.11"}) == pid
    ledger.add_test_evaluation(
        tid, 1, "abc123def456",
        {"task": "digits", "task_checksum": "c" * 64, "metric": "accuracy", "score": 0.9,
         "n": 3, "predictions": [1, 2, 3], "predictions_sha256": "f" * 64},
    )  # fmt: skip
    ledger.finish(tid, 1, status="finished", result=0.9, wall_time=1.5,
                  phases={"train": 1.0}, task_checksum="c" * 64, provenance_id=pid)  # fmt: skip
    t = ledger.trial(tid)
    assert (t.status, t.attempt, t.result, t.phases, t.config) == (
        "finished", 1, 0.9, {"train": 1.0}, {"lr": 0.1},
    )  # fmt: skip
    rows = ledger.metrics(tid)
    assert [r[1] for r in rows] == [0, 1, 2]
    assert rows[0][4] == 2.5 and math.isnan(rows[1][4]) and rows[2][4] == math.inf
    assert ledger.provenance(pid)["packages"] == {"numpy": "2"}
    assert ledger.test_evaluations("abc123def456")[0]["predictions"] == [1, 2, 3]


def test_a_trial_is_claimed_once(ledger: Ledger) -> None:
    """Two runs racing for the same trial: exactly one gets each attempt."""
    _experiment(ledger)
    ledger.add_trials(_plans())
    tid = "abc123def456/baseline/1"
    wins: list[int | None] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        wins.append(ledger.claim(tid, 0, f"host:{threading.get_ident()}", lease=60))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(wins, key=str) == [1, None, None, None]
    assert ledger.trial(tid).attempt == 1


def test_find_experiment_by_id_prefix_and_name(ledger: Ledger) -> None:
    _experiment(ledger, "aaaa11112222", "first")
    _experiment(ledger, "bbbb11112222", "second")
    assert ledger.find_experiment("aaaa11112222").name == "first"
    assert ledger.find_experiment("bbbb").name == "second"
    assert ledger.find_experiment("second").id == "bbbb11112222"
    with pytest.raises(ExperimentNotFound, match="known: first, second"):
        ledger.find_experiment("third")


def test_newer_schema_is_refused(store_url: str) -> None:
    led = Ledger(store_url)
    with led.engine.begin() as c:
        c.execute(update(s.meta).where(s.meta.c.key == "schema").values(value="99"))
    led.close()
    with pytest.raises(LedgerError, match="newer than this fairtrial"):
        Ledger(store_url)


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "x.db")
    with led.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_unreachable_postgres_is_one_clear_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(LedgerError, match="cannot open store") as info:
        Ledger("postgresql://nobody:s3cret@127.0.0.1:1/none?connect_timeout=2")
    assert "s3cret" not in str(info.value) and "nobody:***@" in str(info.value)


def _open(url: str) -> None:
    Ledger(url).close()


def test_processes_opening_a_new_ledger_at_once(store_url: str) -> None:
    """`fairtrial run` and `fairtrial status` started together on a store that does not exist."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for _ in range(3):
        procs = [ctx.Process(target=_open, args=(store_url,)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        led = Ledger(store_url)
        with led.engine.begin() as c:
            for table in reversed(s.metadata.sorted_tables):
                table.drop(c)
        led.close()
