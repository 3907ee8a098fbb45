"""Preregistration: a frozen plan in a hash chain, every deviation of a later run named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update

from conftest import toy_spec
from fairtrial import analysis, prereg
from fairtrial.analysis import methodology
from fairtrial.analysis.document import analyze as _analyze
from fairtrial.backends import InlineBackend
from fairtrial.errors import RegistrationError
from fairtrial.ledger import Ledger
from fairtrial.ledger import schema as s
from fairtrial.report import render_md
from fairtrial.results import Analysis
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec


def analyze_doc(*args, **kwargs):  # type: ignore[no-untyped-def]
    """The analysis as its JSON document (the stable interface these tests check)."""
    return _analyze(*args, **kwargs).to_dict()


HYP = """
[hypothesis]
claim = "noise hurts"
smallest_effect = 0.01
"""
ARMS = """
[arms.noisy]
noise = 0.3
"""


def spec_text(seeds: int = 3, arms: str = ARMS, hyp: str = HYP, extra: str = "") -> str:
    return toy_spec(name="pre", seeds=seeds, arms=arms + "\n" + hyp, extra=extra)


def run(path: Path, ledger: Ledger) -> None:
    run_experiment(load_spec(path), ledger, InlineBackend(), show_progress=False)


def kinds(st: dict[str, object] | None) -> list[str]:
    assert st is not None
    return [d["kind"] for d in st["deviations"]]  # type: ignore[index,attr-defined]


def test_registered_then_run_as_planned(write_spec: Callable[..., Path], ledger: Ledger) -> None:
    path = write_spec(spec_text())
    spec = load_spec(path)
    entry = prereg.register(spec, ledger)
    assert entry["seq"] == 1 and not entry["already"] and entry["supersedes"] is None
    again = prereg.register(spec, ledger)
    assert again["already"] and len(ledger.preregistrations()) == 1
    run(path, ledger)
    exp = ledger.experiment(spec.experiment_id)
    st = prereg.status(ledger, exp)
    assert st is not None and st["deviations"] == [] and st["chain_ok"] and st["matches"]
    assert st["text"] == f"preregistered {entry['record_hash'][:12]} {st['date']}"
    assert st["record"]["seeds"] == {"indices": [0, 1, 2], "root_seed": 0}
    assert st["record"]["hypothesis"]["smallest_effect"] == 0.01
    assert st["record"]["analysis"]["comparisons"] == ["noisy vs baseline"]
    # an experiment never registered has no status
    other = load_spec(write_spec(toy_spec(name="unregistered", seeds=2), name="u.toml"))
    run(other.path, ledger)  # type: ignore[arg-type]
    assert prereg.status(ledger, ledger.experiment(other.experiment_id)) is None


def test_register_refuses_after_trials_started(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    path = write_spec(spec_text())
    run(path, ledger)
    with pytest.raises(RegistrationError, match="before the first trial"):
        prereg.register(load_spec(path), ledger)


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (
            {"arms": ARMS + "[arms.louder]\nnoise = 0.6\n"},
            {"arms_added", "analysis_changed"},
        ),
        ({"seeds": 2}, {"seeds_changed", "trials_dropped"}),
        ({"extra": 'metric = "balanced_accuracy"'}, {"metric_changed", "analysis_changed"}),
        ({"extra": "root_seed = 7"}, {"seeds_changed"}),
        ({"arms": "[arms.noisy]\nnoise = 0.5\n"}, {"arm_changed"}),
        (
            {"hyp": HYP.replace("0.01", "0.03")},
            {"hypothesis_changed", "analysis_changed"},
        ),
        ({"extra": 'task = "breast_cancer"'}, {"task_changed"}),
    ],
)
def test_each_deviation_is_detected(
    write_spec: Callable[..., Path],
    ledger: Ledger,
    changed: dict[str, object],
    expected: set[str],
) -> None:
    registered = load_spec(write_spec(spec_text()))
    prereg.register(registered, ledger)
    body = spec_text(**changed)  # type: ignore[arg-type]
    if 'task = "breast_cancer"' in body:
        body = body.replace('task = "digits"\n', "")
    path = write_spec(body, name="ran.toml")
    run(path, ledger)
    spec = load_spec(path)
    assert spec.experiment_id != registered.experiment_id
    st = prereg.status(ledger, ledger.experiment(spec.experiment_id))
    assert set(kinds(st)) == expected, st
    assert st is not None and not st["matches"] and "deviation" in st["text"]


def test_dropped_trials_and_changed_analysis_methods(
    write_spec: Callable[..., Path], ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_spec(spec_text())
    spec = load_spec(path)
    prereg.register(spec, ledger)
    run(path, ledger)
    exp = ledger.experiment(spec.experiment_id)
    with ledger.engine.begin() as c:
        c.execute(
            delete(s.trials).where(
                s.trials.c.id == ledger.trial_at(spec.experiment_id, "noisy", 2).id
            )
        )
    st = prereg.status(ledger, exp)
    assert kinds(st) == ["trials_dropped"]
    assert "1 of 6 registered trials" in st["deviations"][0]["detail"]  # type: ignore[index]
    assert "noisy seed 2 (absent)" in st["deviations"][0]["detail"]  # type: ignore[index]
    # fairtrial's analysis changes after registration (BCa from 2 pairs on): "analysis changed"
    monkeypatch.setattr(methodology, "BCA_MIN_PAIRS", 2)
    st = prereg.status(ledger, exp)
    assert kinds(st) == ["analysis_changed", "trials_dropped"]
    detail = st["deviations"][0]["detail"]  # type: ignore[index]
    assert detail == "interval: paired t (95%) → BCa bootstrap (95%)"


def test_registration_after_the_run_started_is_late(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    path = write_spec(spec_text())
    run(path, ledger)  # ran unregistered ...
    later = load_spec(write_spec(spec_text(seeds=4), name="later.toml"))
    prereg.register(later, ledger)  # ... then a plan of the same name was registered
    st = prereg.status(ledger, ledger.experiment(load_spec(path).experiment_id))
    assert kinds(st)[0] == "registered_late" and "seeds_changed" in kinds(st)


@pytest.mark.parametrize(
    "edit",
    [
        (
            "record",
            "UPDATE preregistrations SET record_json = replace(record_json, '0.01', "
            "'0.001') WHERE seq = 1",
        ),
        ("time", "UPDATE preregistrations SET created_at = created_at - 86400 WHERE seq = 2"),
        ("delete", "DELETE FROM preregistrations WHERE seq = 1"),
        (
            "hash",
            "UPDATE preregistrations SET entry_hash = 'ab' || substr(entry_hash, 3) WHERE seq = 1",
        ),
    ],
    ids=lambda e: e[0],
)
def test_edits_of_the_log_are_detected(
    write_spec: Callable[..., Path], ledger: Ledger, edit: tuple[str, str]
) -> None:
    first = load_spec(write_spec(spec_text()))
    prereg.register(first, ledger)
    prereg.register(load_spec(write_spec(spec_text(seeds=4), name="b.toml")), ledger)
    assert ledger.check_chain("preregistrations").ok
    with ledger.engine.begin() as c:
        c.execute(text(edit[1]))
    check = ledger.check_chain("preregistrations")
    assert not check.ok and check.problems
    ledger.upsert_experiment(
        experiment_id=first.experiment_id,
        name=first.name,
        spec_hash=first.spec_hash,
        spec=first.normalized(),
        arms=first.arm_table(),
        spec_path=None,
        task=first.task,
        task_checksum=first.task_checksum,
        metric=first.metric,
        direction=first.direction,
        seeds=first.seeds,
        root_seed=first.root_seed,
    )
    st = prereg.status(ledger, ledger.experiment(first.experiment_id))
    assert "log_tampered" in kinds(st) and not st["chain_ok"]  # type: ignore[index]
    with pytest.raises(RegistrationError, match="fails its hash check"):
        prereg.register(load_spec(write_spec(spec_text(seeds=5), name="c.toml")), ledger)


def test_concurrent_registrations_keep_one_chain(tmp_path: Path) -> None:
    """Two processes appending at once: the loser of a seq retries; the chain stays whole."""
    db = tmp_path / "l.db"
    Ledger(db).close()
    code = (
        "import sys; from fairtrial.ledger import Ledger\n"
        "led = Ledger(sys.argv[1])\n"
        "for i in range(40):\n"
        "    led.add_preregistration(name=f'{sys.argv[2]}{i}', experiment_id='x', "
        "spec_hash='y', record={'i': i})\n"
    )
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), tag], env=env) for tag in "ab"]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    led = Ledger(db)
    check = led.check_chain("preregistrations")
    assert check.ok and check.entries == 80
    assert [r["seq"] for r in led.preregistrations()] == list(range(1, 81))
    with led.engine.begin() as c:  # and a later edit of any entry breaks it
        c.execute(update(s.preregistrations).where(s.preregistrations.c.seq == 40).values(name="z"))
    assert not led.check_chain("preregistrations").ok


def test_auto_seeds_register_the_rule(write_spec: Callable[..., Path], ledger: Ledger) -> None:
    path = write_spec(spec_text(extra="max_seeds = 6").replace("seeds = 3", 'seeds = "auto"'))
    spec = load_spec(path)
    entry = prereg.register(spec, ledger)
    assert '"auto":true' in entry["record_json"]
    run(path, ledger)
    exp = ledger.experiment(spec.experiment_id)
    assert exp.seeds >= 5
    st = prereg.status(ledger, exp)
    assert st is not None and st["deviations"] == [], st["deviations"]
    with ledger.engine.begin() as c:
        c.execute(
            delete(s.trials).where(
                s.trials.c.id == ledger.trial_at(spec.experiment_id, "noisy", 4).id
            )
        )
    assert kinds(prereg.status(ledger, exp)) == ["trials_dropped"]


@pytest.mark.parametrize(("alpha", "confidence"), [(0.05, 0.95), (0.1, 0.9)])
def test_the_frozen_method_is_the_one_the_report_uses(
    write_spec: Callable[..., Path], ledger: Ledger, alpha: float, confidence: float
) -> None:
    """6 seeds: the plan freezes the paired t interval at 1 - alpha and failures dropped,
    exactly the settings the report of the run prints."""
    path = write_spec(spec_text(seeds=6, hyp=HYP + f"alpha = {alpha}\n"))
    spec = load_spec(path)
    entry = prereg.register(spec, ledger)
    frozen = json.loads(entry["record_json"])
    assert frozen["format"] == 2
    method = frozen["analysis"]["method"]
    assert method["paired_seeds"] == [6, 6]
    assert method["interval"] == {"methods": ["paired t"], "confidence": confidence}
    assert method["test"] == {"methods": ["exact sign-flip permutation"]}
    assert method["correction"] == {"method": "Holm", "families": ["arms vs baseline"]}
    assert method["equivalence"] == {"method": "TOST", "margin": 0.01}
    assert [r["verdict"] for r in method["verdict"]] == list(analysis.VERDICTS)
    assert (method["failures"], method["resamples"], method["random_seed"]) == ("drop", 10_000, 0)
    words = frozen["analysis"]["method_text"]
    pct = f"{confidence:.0%}"
    assert words["effect_interval"].startswith(f"{pct} paired t interval")
    assert words["arm_interval"].endswith(pct) and words["failures"].startswith("dropped")

    run(path, ledger)
    exp = ledger.experiment(spec.experiment_id)
    doc = analyze_doc(ledger, exp)
    assert {c["interval_method"] for c in doc["comparisons"]} == {"paired t"}
    settings = doc["settings"]
    assert settings["method"] == method and settings["confidence"] == confidence
    assert {k: settings[k] for k in words} == words
    pre = doc["experiment"]["preregistered"]
    assert pre["deviations"] == [] and pre["method_note"] is None
    assert pre == prereg.status(ledger, exp)  # what a bundle stores, without the report


def test_more_than_20_seeds_change_the_frozen_interval_and_test(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    registered = load_spec(write_spec(spec_text(seeds=6)))
    prereg.register(registered, ledger)
    path = write_spec(spec_text(seeds=21), name="more.toml")
    run(path, ledger)
    exp = ledger.experiment(load_spec(path).experiment_id)
    doc = analyze_doc(ledger, exp)
    assert doc["comparisons"][0]["interval_method"] == "BCa bootstrap"
    st = doc["experiment"]["preregistered"]
    assert kinds(st) == ["seeds_changed", "analysis_changed"]
    assert st["deviations"][1]["detail"] == (
        "interval: paired t (95%) → BCa bootstrap (95%); "
        "test: exact sign-flip permutation → Monte Carlo sign-flip permutation "
        "(10000 resamples)"
    )
    assert doc["settings"]["method"]["interval"]["methods"] == ["BCa bootstrap"]
    md = render_md(Analysis.from_dict(doc))
    assert "- deviation, analysis changed: interval: paired t (95%) → BCa" in md


def test_report_failures_worst_is_a_deviation(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """``register`` and ``report`` as a user types them; another failure policy or number of
    resamples than the registered ones is a deviation."""
    exe = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"
    store = str(tmp_path / "cli.db")
    path = write_spec(spec_text(seeds=4))

    def ft(*args: str) -> str:
        out = subprocess.run(
            [exe, *args, "--store", store], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    reg = ft("register", str(path))
    assert "analysis: interval paired t (95%); test exact sign-flip permutation" in reg
    assert "failures drop" in reg
    ledger = Ledger(store)
    run(path, ledger)
    exp = ledger.experiment(load_spec(path).experiment_id)
    assert analyze_doc(ledger, exp)["experiment"]["preregistered"]["deviations"] == []
    fewer = analyze_doc(ledger, exp, analysis.Options(n_resamples=2000))
    assert fewer["experiment"]["preregistered"]["deviations"] == [
        {"kind": "analysis_changed", "detail": "resamples: 10000 → 2000"}
    ]
    ledger.close()
    worst = json.loads(ft("report", "pre", "--format", "json", "--failures", "worst"))
    devs = worst["experiment"]["preregistered"]["deviations"]
    assert devs == [{"kind": "analysis_changed", "detail": "failures: drop → worst"}]
    assert worst["settings"]["method"]["failures"] == "worst"


#: what ``register`` froze before the method was data (format 1), as an older fairtrial wrote it
OLD_METHODS = {
    "pairing": "paired by seed index (common random numbers)",
    "effect": "mean paired difference, positive = better in the metric's direction",
    "interval": "95% BCa bootstrap (t-interval as a cross-check)",
    "test": "exact sign-flip permutation test on the paired differences "
    "(Monte Carlo past 20 pairs), paired t-test alongside",
    "correction": "Holm within each family (arms vs baseline, ablations)",
    "equivalence": "TOST against +/- smallest_effect",
    "verdict": "better/worse: adjusted p < alpha and interval excludes 0; equivalent: TOST; "
    "else inconclusive with the minimum detectable effect and seeds needed",
    "failures": "failed and diverged trials are counted per arm, never dropped",
}


def test_a_format_1_record_is_shown_and_its_method_not_compared(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    path = write_spec(spec_text())
    spec = load_spec(path)
    record = prereg.plan_record(spec)
    record["format"] = 1
    record["analysis"] = {
        "primary_metric": "accuracy",
        "alpha": 0.05,
        "power": 0.8,
        "equivalence_margin": 0.01,
        "confidence": 0.95,
        "comparisons": ["noisy vs baseline"],
        "ablations": [],
        "methods": OLD_METHODS,
    }
    old = ledger.add_preregistration(
        name=spec.name, experiment_id=spec.experiment_id, spec_hash=spec.spec_hash, record=record
    )
    run(path, ledger)
    exp = ledger.experiment(spec.experiment_id)
    doc = analyze_doc(ledger, exp)
    st = doc["experiment"]["preregistered"]
    assert st["deviations"] == [] and st["chain_ok"] and st["hash"] == old["record_hash"]
    assert st["method_note"] == prereg.OLD_FORMAT_NOTE
    assert st["text"].endswith(f"({prereg.OLD_FORMAT_NOTE})")
    assert st["record"]["analysis"]["methods"]["interval"].startswith("95% BCa")
    assert "older fairtrial" in render_md(Analysis.from_dict(doc))
    # the parts both formats hold are still compared
    with ledger.engine.begin() as c:
        c.execute(
            delete(s.trials).where(
                s.trials.c.id == ledger.trial_at(spec.experiment_id, "noisy", 1).id
            )
        )
    assert kinds(prereg.status(ledger, exp)) == ["trials_dropped"]
