"""The sealed test log: one chained entry per test evaluation, edits found, reuse of a test
split across experiments warned about."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import toy_spec
from fairtrial import testlog
from fairtrial.backends import InlineBackend
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

ARMS = "[arms.noisy]\nnoise = 0.3\n"


def run(
    write_spec: Callable[..., Path], ledger: Ledger, name: str, extra: str = "", task: str = ""
) -> str:
    body = toy_spec(name=name, seeds=2, arms=ARMS, extra=extra)
    if task:
        body = body.replace('task = "digits"', f'task = "{task}"')
    path = write_spec(body, name=f"{name}.toml")
    spec = load_spec(path)
    run_experiment(spec, ledger, InlineBackend(), show_progress=False)
    return spec.experiment_id


def test_every_evaluation_is_logged_and_chained(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    eid = run(write_spec, ledger, "first")
    log = ledger.test_log(eid)
    evals = ledger.test_evaluations(eid)
    assert len(log) == len(evals) == 4
    for entry, ev in zip(log, evals, strict=True):
        assert (entry["trial_id"], entry["predictions_sha256"], entry["score"]) == (
            ev["trial_id"], ev["predictions_sha256"], ev["score"],
        )  # fmt: skip
        assert entry["task"] == "digits" and entry["experiment_id"] == eid
    assert [e["seq"] for e in log] == [1, 2, 3, 4]
    summary = testlog.summary(ledger, ledger.experiment(eid))
    assert summary["evaluations"] == 4 and summary["trials"] == 4
    assert summary["experiments_on_task"] == 1 and summary["warning"] is None
    assert summary["chain_ok"] and summary["head"] == log[-1]["entry_hash"]


def test_reuse_of_a_test_split_is_warned_about(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    first = run(write_spec, ledger, "first")
    second = run(write_spec, ledger, "second", extra="root_seed = 1")
    run(write_spec, ledger, "other-task", task="breast_cancer")
    s1 = testlog.summary(ledger, ledger.experiment(first))
    s2 = testlog.summary(ledger, ledger.experiment(second))
    assert s1["experiments_on_task"] == s2["experiments_on_task"] == 2
    # a count, never the names: bundles carry this summary, other experiments may be private
    assert s2["other_experiments"] == 1
    assert s2["warning"] is not None and "model selection leaked" in s2["warning"]
    assert "'digits'" in s2["warning"] and "first" not in s2["warning"]


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("UPDATE test_log SET score = 1.0 WHERE seq = 2", "entry 2 was modified"),
        ("DELETE FROM test_log WHERE seq = 2", "entry 2 is missing"),
        # the newest entry: the chain alone cannot see it, the stored evaluation can
        ("DELETE FROM test_log WHERE seq = 4", "missing from the log"),
        ("UPDATE trials SET result = 0.999 WHERE seed = 1 AND arm = 'noisy'", "was changed"),
        ("UPDATE test_log SET predictions_sha256 = 'x' WHERE seq = 1", "entry 1 was modified"),
    ],
)
def test_edits_are_detected(
    write_spec: Callable[..., Path], ledger: Ledger, sql: str, found: str
) -> None:
    eid = run(write_spec, ledger, "first")
    assert testlog.verify(ledger)["ok"]
    with ledger.engine.begin() as c:
        c.execute(text(sql))
    check = testlog.verify(ledger)
    assert not check["ok"]
    assert any(found in p for p in check["problems"]), check["problems"]
    summary = testlog.summary(ledger, ledger.experiment(eid))
    assert not summary["chain_ok"] and "integrity" in (summary["warning"] or "")


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    payload = {
        "task": "t",
        "task_checksum": "c",
        "metric": "accuracy",
        "score": 0.5,
        "n": 1,
        "predictions": [1],
        "predictions_sha256": "p",
    }

    def writer(tag: str) -> None:
        for i in range(30):
            led.add_test_evaluation(f"{tag}/{i}", 1, "e", {**payload, "score": i / 30})

    threads = [threading.Thread(target=writer, args=(t,)) for t in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = led.check_chain("test_log")
    assert check.ok and check.entries == 90
    assert len(led.test_evaluations("e")) == 90
