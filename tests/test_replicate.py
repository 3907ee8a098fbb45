"""Replicate: bundle -> verify -> replicate agrees on this machine; a changed recipe does not;
the agreement rules checked on constructed documents and by simulation."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import toy_spec
from fairtrial import bundle as B
from fairtrial.backends import InlineBackend
from fairtrial.errors import ReplicationError
from fairtrial.ledger import Ledger
from fairtrial.replicate import OUTCOMES, compare_arm, format_record, judge, replicate
from fairtrial.results import Analysis
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"
ARMS = "[arms.noisy]\nnoise = 0.5\n"
HYP = "[hypothesis]\nclaim = 'noise hurts'\nsmallest_effect = 0.01\n"


def make_bundle(
    write_spec: Callable[..., Path], tmp_path: Path, body: str, name: str = "b.tar.gz"
) -> tuple[Path, Ledger]:
    led = Ledger(tmp_path / "original.db")
    spec = load_spec(write_spec(body))
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    out = tmp_path / name
    B.write_bundle(led, led.experiment(spec.experiment_id), out)
    return out, led


# -- judge: the agreement rules ----------------------------------------------------------------
def doc(
    arms: dict[str, list[float]],
    comparisons: list[dict[str, Any]] | None = None,
    **more_arms: dict[str, Any],
) -> Analysis:
    data: dict[str, Any] = {
        "arms": {
            name: {
                "seeds": list(range(len(v))),
                "values": v,
                "mean": float(np.mean(v)),
                "failed": 0,
            }
            for name, v in arms.items()
        },
        "comparisons": comparisons or [],
        "ablations": [],
    }
    data["arms"].update(more_arms)
    return Analysis.from_dict(data)


def verdict(arm: str, v: str, effect: float) -> dict[str, Any]:
    return {"arm": arm, "against": "baseline", "verdict": v, "effect": effect}


def test_judge_same_seeds_identical_results_replicate() -> None:
    o = doc(
        {"baseline": [0.9, 0.91, 0.92], "new": [0.95, 0.96, 0.95]}, [verdict("new", "better", 0.04)]
    )
    r = judge(o, o, tolerance=0.01, paired=True)
    assert r["outcome"] == "replicated" and r["failures"] == [] and r["undecided"] == []
    assert [a["status"] for a in r["arms"]] == ["agree", "agree"]
    assert r["arms"][0]["difference"] == 0 and r["arms"][0]["test"] == "paired TOST (by seed)"
    assert r["claims"] == [
        {"claim": "new vs baseline: better", "original": "better", "replication": "better",
         "original_effect": 0.04, "replication_effect": 0.04, "status": "reproduced"}
    ]  # fmt: skip


def test_judge_names_the_arm_and_the_claim_that_failed() -> None:
    o = doc(
        {"baseline": [0.9, 0.91, 0.92], "new": [0.95, 0.96, 0.95]}, [verdict("new", "better", 0.04)]
    )
    rep = doc(
        {"baseline": [0.9, 0.91, 0.92], "new": [0.90, 0.91, 0.915]},
        [verdict("new", "equivalent", 0.0)],
    )
    r = judge(o, rep, tolerance=0.01, paired=True)
    assert r["outcome"] == "not replicated"
    assert [a["status"] for a in r["arms"]] == ["agree", "differ"]
    assert r["failures"][0].startswith(
        "arm 'new': mean 0.9083 vs 0.9533 original, difference -0.0450"
    )
    assert "beyond ±0.01" in r["failures"][0]
    assert r["failures"][1] == (
        "claim 'new vs baseline: better' not reproduced: the replication says equivalent "
        "(effect +0.0000 vs +0.0400)"
    )


def test_judge_undecided_arms_and_claims_are_inconclusive() -> None:
    o = doc(
        {"baseline": [0.90, 0.95, 0.85], "new": [0.9, 0.9, 0.9]}, [verdict("new", "worse", -0.01)]
    )
    rep = doc(
        {"baseline": [0.91, 0.93, 0.88], "new": [0.9, 0.9, 0.9]},
        [verdict("new", "inconclusive", -0.01)],
    )
    r = judge(o, rep, tolerance=0.01, paired=True)
    assert r["outcome"] == "inconclusive" and r["failures"] == []
    base = r["arms"][0]
    assert base["status"] == "undecided" and base["seeds_needed"] > 3
    assert f"about {base['seeds_needed']} seeds would decide it" in r["undecided"][0]
    assert r["claims"][0]["status"] == "undecided"
    # an original "inconclusive" is no claim; an arm failed in both agrees
    o2 = doc(
        {"baseline": [0.9, 0.9]},
        [verdict("new", "inconclusive", 0.0)],
        new={"seeds": [], "values": [], "mean": None, "failed": 2},
    )
    r2 = judge(o2, o2, tolerance=0.01, paired=True)
    assert r2["outcome"] == "replicated" and r2["claims"][0]["status"] == "no claim"
    assert r2["arms"][1]["reason"] == "no finished trials in either (failed in both)"
    missing = judge(o2, doc({"baseline": [0.9, 0.9]}), tolerance=0.01, paired=True)
    assert (
        missing["outcome"] == "not replicated"
        and "missing from the replication" in missing["failures"][0]
    )
    # no verdicts in the original: arms only, and said so
    r3 = judge(doc({"a": [1.0, 1.0]}), doc({"a": [1.0, 1.0]}), tolerance=0.1, paired=True)
    assert r3["claims"] == [] and "no verdicts" in r3["notes"][0]


def test_welch_agreement_by_simulation() -> None:
    """Fresh seeds, equal true means: seldom 'differ' (its rate is at most alpha), and with
    the seeds that seeds_needed asks for, 'agree' in at least ~80% of replications."""
    rng = np.random.default_rng(12345)
    sd, tol = 0.01, 0.01
    small = [
        compare_arm(rng.normal(0.9, sd, 5), rng.normal(0.9, sd, 5), tolerance=tol, paired=False)
        for _ in range(400)
    ]
    assert all(s["test"] == "Welch TOST (unpaired)" for s in small)
    assert sum(s["status"] == "differ" for s in small) / 400 <= 0.05
    needed = [s["seeds_needed"] for s in small if s["status"] == "undecided"]
    n = int(np.median(needed))
    big = [
        compare_arm(rng.normal(0.9, sd, n), rng.normal(0.9, sd, n), tolerance=tol, paired=False)
        for _ in range(400)
    ]
    assert sum(s["status"] == "agree" for s in big) / 400 >= 0.75
    shifted = [
        compare_arm(rng.normal(0.9, sd, n), rng.normal(0.93, sd, n), tolerance=tol, paired=False)
        for _ in range(200)
    ]
    assert sum(s["status"] == "differ" for s in shifted) / 200 >= 0.9


# -- real runs ---------------------------------------------------------------------------------
def test_round_trip_replicates(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    path, _ = make_bundle(write_spec, tmp_path, toy_spec(name="rt", seeds=3, arms=ARMS + HYP))
    B.verify_bundle(path)
    store = tmp_path / "mine.db"
    record = replicate(
        path, store=store, folder=tmp_path / "rep", backend=InlineBackend(), show_progress=False
    )
    assert record["outcome"] == "replicated", format_record(record)
    assert [(a["arm"], a["status"], a["difference"]) for a in record["arms"]] == [
        ("baseline", "agree", 0.0), ("noisy", "agree", 0.0)
    ]  # fmt: skip
    assert (
        record["tolerance"] == 0.01 and record["tolerance_source"] == "hypothesis.smallest_effect"
    )
    assert record["replication"]["finished"] == 6 and record["replication"]["seeds"] == "same"
    assert record["bundle"]["sha256"] == B.file_sha256(path)
    assert record["acm"]["badge"] is None and record["acm"]["same_host"]
    assert "Results Reproduced" in record["acm"]["badge_meaning"]
    stored = Ledger(store).replications()
    assert (
        len(stored) == 1
        and stored[0]["outcome"] == "replicated"
        and stored[0]["id"] == record["id"]
    )
    exported = json.loads((tmp_path / "rep" / "replication.json").read_text())
    assert exported["outcome"] == "replicated" and exported["arms"] == record["arms"]
    assert (tmp_path / "rep" / "toy.py").exists(), "ran from the bundle's code snapshot"
    # the run-settings differ (inline here and there) only if they do: diff output is recorded
    assert "count" in record["environment_differences"]


def _forge(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    """An internally consistent bundle whose recipe was changed after the run: the file, its
    recorded hashes and the manifest all updated (what a careless or dishonest author ships)."""
    with tarfile.open(src, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    old_manifest = json.loads(files.pop("manifest.json"))
    before = hashlib.sha256(files["code/files/toy.py"]).hexdigest()
    files["code/files/toy.py"] = files["code/files/toy.py"].replace(old, new)
    after = hashlib.sha256(files["code/files/toy.py"]).hexdigest()
    assert before != after
    for name in ("code/snapshot.json", "environment/provenance.json"):
        files[name] = files[name].replace(before.encode(), after.encode())
    B.write_archive(files, dst, extra={"experiment": old_manifest["experiment"]})


def test_changed_recipe_is_not_replicated(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    path, _ = make_bundle(write_spec, tmp_path, toy_spec(name="chg", seeds=3, arms=ARMS + HYP))
    forged = tmp_path / "forged.tar.gz"
    line = b'noise = float(config.get("noise", 0.0))'
    _forge(path, forged, line, b'noise = 4 * float(config.get("noise", 0.0))')
    B.verify_bundle(forged)  # consistent: only re-running can tell
    # without updating the recorded hashes the edit is caught by verify alone (test_bundle)
    record = replicate(
        forged, store=tmp_path / "m.db", folder=tmp_path / "rep", backend=InlineBackend()
    )
    assert record["outcome"] == "not replicated"
    status = {a["arm"]: a["status"] for a in record["arms"]}
    assert status == {"baseline": "agree", "noisy": "differ"}
    assert len(record["failures"]) == 1 and record["failures"][0].startswith("arm 'noisy': mean ")
    noisy = next(a for a in record["arms"] if a["arm"] == "noisy")
    assert noisy["difference"] < -0.01 and noisy["interval"][1] <= -0.01
    assert "FAILED arm 'noisy'" in format_record(record)


def test_fresh_seeds_redraw_procedural_data(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    body = toy_spec(name="fresh", seeds=3, arms=ARMS + HYP).replace('"digits"', '"mnist1d"')
    path, _ = make_bundle(write_spec, tmp_path, body)
    record = replicate(
        path, seeds="fresh", tolerance=0.05, store=tmp_path / "m.db",
        folder=tmp_path / "rep", backend=InlineBackend(),
    )  # fmt: skip
    rep = record["replication"]
    assert rep["root_seed"] != 0 and rep["task"].startswith("mnist1d@")
    assert rep["task_checksum"] != record["original"]["task_checksum"]
    assert "fresh data draw" in rep["data"] and record["outcome"] in OUTCOMES
    assert {a["test"] for a in record["arms"]} == {"Welch TOST (unpaired)"}
    # a fixed dataset keeps its data; only the seeds are fresh
    path2, _ = make_bundle(
        write_spec, tmp_path, toy_spec(name="fixed", seeds=3, arms=ARMS + HYP), "c.tar.gz"
    )
    rec2 = replicate(
        path2,
        seeds="fresh",
        root_seed=99,
        store=tmp_path / "m.db",
        folder=tmp_path / "rep2",
        backend=InlineBackend(),
    )
    assert rec2["replication"]["root_seed"] == 99 and rec2["replication"]["task"] == "digits"
    assert "fixed dataset" in rec2["replication"]["data"]


def test_replicate_needs_a_tolerance(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    path, _ = make_bundle(write_spec, tmp_path, toy_spec(name="notol", seeds=3, arms=ARMS))
    with pytest.raises(ReplicationError, match="pass --tolerance"):
        replicate(path, store=tmp_path / "m.db", backend=InlineBackend())
    with pytest.raises(ReplicationError, match="must be a number > 0"):
        replicate(path, tolerance=-1, store=tmp_path / "m.db", backend=InlineBackend())


@pytest.mark.slow
@pytest.mark.torch
def test_cli_round_trip_with_a_real_recipe(tmp_path: Path) -> None:
    """A real MLP on digits (2 arms x 3 seeds), run, bundled, verified and replicated from the
    command line in fresh processes."""
    pytest.importorskip("torch")
    spec = tmp_path / "mlp.toml"
    spec.write_text(
        "[experiment]\nname = 'mlp-rt'\ntask = 'digits'\nrecipe = 'mlp'\nseeds = 3\n"
        "[hypothesis]\nsmallest_effect = 0.005\n"
        "[baseline]\nhidden = 16\ndepth = 1\nepochs = 2\nlr = 0.01\nnorm = 'none'\n"
        "[arms.layernorm]\nnorm = 'layer'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FAIRTRIAL_STORE"}

    def ft(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EXE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
        )

    assert ft("register", str(spec)).returncode == 0
    run = ft("run", str(spec), "--no-report")
    assert run.returncode == 0, run.stderr
    out = ft("bundle", "mlp-rt", "-o", "mlp.tar.gz")
    assert out.returncode == 0 and "sha256" in out.stdout, out.stderr
    ver = ft("verify", "mlp.tar.gz")
    assert ver.returncode == 0 and "preregistered" in ver.stdout, ver.stderr
    # mlp on digits: a built-in task, so verify re-scored every trial from its predictions
    assert "results re-scored" in ver.stdout and "all 6 finished trials" in ver.stdout, ver.stdout
    rep = ft("replicate", "mlp.tar.gz", "-o", "record.json")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert rep.stdout.startswith("REPLICATED: mlp-rt")
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["outcome"] == "replicated"
    assert all(a["status"] == "agree" for a in record["arms"])
    diff = ft("diff", "mlp-rt", "mlp.tar.gz")
    assert diff.returncode == 0 and "no captured differences" in diff.stdout


def test_command_recipe_replicates_from_its_snapshot(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    body = """
    [experiment]
    name = "cmd-rep"
    task = "breast_cancer"
    command = "{python} cmd_train.py --shrink {shrink} --seed {seed}"
    seeds = 2

    [hypothesis]
    smallest_effect = 0.01

    [baseline]
    shrink = 1.0

    [arms.broken]
    shrink = 0.8
    """
    path, _ = make_bundle(write_spec, tmp_path, body)
    with B.read_bundle(path) as b:
        assert list(b.json("code/snapshot.json")["files"]) == ["cmd_train.py"]
    record = replicate(
        path, store=tmp_path / "m.db", folder=tmp_path / "rep", backend=InlineBackend()
    )
    assert record["outcome"] == "replicated", format_record(record)
    broken = next(a for a in record["arms"] if a["arm"] == "broken")
    assert broken["status"] == "agree" and broken["replication_failed"] == 2
    assert (tmp_path / "rep" / "cmd_train.py").exists()


def test_a_flipped_verdict_is_named(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """With verdicts in the analysis: the original says noise makes the arm worse; the forged
    recipe ignores the noise, so the replication finds the arms equivalent."""
    body = toy_spec(name="flip", seeds=6, arms="[arms.noisy]\nnoise = 1.5\n" + HYP)
    path, _ = make_bundle(write_spec, tmp_path, body)
    with B.read_bundle(path) as b:
        original = b.json("results/analysis.json")["comparisons"][0]
    assert (original["arm"], original["verdict"]) == ("noisy", "worse"), original
    forged = tmp_path / "forged.tar.gz"
    line = b'noise = float(config.get("noise", 0.0))'
    _forge(path, forged, line, b'noise = 0.0 * float(config.get("noise", 0.0))')
    record = replicate(
        forged, store=tmp_path / "m.db", folder=tmp_path / "rep", backend=InlineBackend()
    )
    assert record["outcome"] == "not replicated"
    claim = record["claims"][0]
    assert claim["claim"] == "noisy vs baseline: worse" and claim["status"] == "failed"
    assert claim["replication"] == "equivalent"
    assert any(
        f.startswith("claim 'noisy vs baseline: worse' not reproduced: the replication says "
                     "equivalent") for f in record["failures"]
    )  # fmt: skip
