"""Verdicts, ablations, seed planning and reports, on synthetic scores and on real runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import toy_spec
from fairtrial import stats
from fairtrial.analysis import (
    Hypothesis,
    Options,
    analyze_scores,
    compare,
    learning_curves,
    method,
    method_changes,
    method_text,
    settings,
)
from fairtrial.analysis.document import analyze
from fairtrial.backends import InlineBackend, LocalBackend
from fairtrial.ledger import Ledger
from fairtrial.plan import plan_seeds
from fairtrial.report import render_html, render_json, render_md, render_tex, render_text
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

ARMS = {
    "arms": [
        {"name": "baseline", "kind": "baseline", "components": {}},
        {"name": "up", "kind": "arm", "components": {"x": 1}},
        {"name": "down", "kind": "arm", "components": {"x": -1}},
        {"name": "same", "kind": "arm", "components": {"x": 0.5}},
    ],
    "ablations": [],
}
FAST = Options(n_resamples=2000)


def _scores(rng: np.random.Generator, n: int, shifts: dict[str, float], sd_diff: float = 0.005):
    """Paired scores: a per-seed level shared by all arms plus a small arm-specific noise."""
    level = 0.9 + 0.02 * rng.standard_normal(n)
    return {
        arm: {s: float(level[s] + shift + sd_diff * rng.standard_normal()) for s in range(n)}
        for arm, shift in shifts.items()
    }


def test_verdicts_on_clear_cases() -> None:
    rng = np.random.default_rng(1)
    scores = _scores(rng, 12, {"baseline": 0.0, "up": 0.02, "down": -0.02, "same": 0.0})
    hyp = Hypothesis(smallest_effect=0.01)
    comps, _, _ = analyze_scores(scores, ARMS, "max", hyp, FAST)
    verdict = {c.arm: c.verdict for c in comps}
    assert verdict == {"up": "better", "down": "worse", "same": "equivalent"}
    for c in comps:
        assert c.family == "arms vs baseline"
        assert c.p_adjusted >= c.p
        assert c.interval[0] <= c.effect <= c.interval[1]
        assert c.n_pairs == 12
    up = next(c for c in comps if c.arm == "up")
    assert up.wins == 12 and up.prob_improvement.estimate == 1.0
    assert up.p_method == "exact sign-flip permutation"
    # 12 positive pairs of 12: the exact two-sided p is 2 / 2^12, then Holm over 3 tests
    assert up.p == pytest.approx(2 / 2**12)


def test_direction_min_flips_the_sign() -> None:
    rng = np.random.default_rng(2)
    scores = _scores(rng, 10, {"baseline": 0.0, "up": 0.02, "down": -0.02, "same": 0.0})
    comps, _, _ = analyze_scores(scores, ARMS, "min", Hypothesis(smallest_effect=0.01), FAST)
    verdict = {c.arm: c.verdict for c in comps}
    assert verdict["up"] == "worse" and verdict["down"] == "better"
    assert next(c for c in comps if c.arm == "down").effect > 0


def test_inconclusive_says_what_it_would_take() -> None:
    rng = np.random.default_rng(3)
    # a true gain of 0.005 under paired noise of sd 0.02: 4 seeds cannot tell
    scores = _scores(rng, 4, {"baseline": 0.0, "up": 0.005}, sd_diff=0.02)
    arms = {"arms": ARMS["arms"][:2], "ablations": []}
    hyp = Hypothesis(smallest_effect=0.005, alpha=0.05, power=0.8)
    (c,), _, _ = analyze_scores(scores, arms, "max", hyp, FAST)
    assert c.verdict == "inconclusive"
    assert c.mde > 0.005
    sd = c.sd_diff
    assert c.seeds_needed == stats.required_seeds(sd, 0.005, alpha=0.05, power=0.8)
    assert c.seeds_needed > 4
    # without a smallest effect there is nothing to plan for or to be equivalent to
    (c2,), _, _ = analyze_scores(scores, arms, "max", Hypothesis(), FAST)
    assert c2.verdict == "inconclusive" and c2.seeds_needed is None and c2.tost is None


def test_too_few_pairs_is_inconclusive_not_an_error() -> None:
    arms = {"arms": ARMS["arms"][:2], "ablations": []}
    (c,), _, _ = analyze_scores({"baseline": {0: 0.9}, "up": {0: 0.95}}, arms, "max", Hypothesis())
    assert c.verdict == "inconclusive" and "at least 2" in c.reason


def test_identical_arms_are_equivalent_not_a_crash() -> None:
    arms = {"arms": ARMS["arms"][:2], "ablations": []}
    same = {s: 0.9 + s / 100 for s in range(6)}
    (c,), _, _ = analyze_scores(
        {"baseline": same, "up": dict(same)}, arms, "max", Hypothesis(smallest_effect=0.01)
    )
    assert c.effect == 0 and c.verdict == "equivalent"


def _factorial(rng: np.random.Generator, n: int, a: float, b: float, ab: float):
    arms = {
        "arms": [
            {"name": "baseline", "kind": "baseline", "components": {}},
            {"name": "both", "kind": "arm", "components": {"a": 1, "b": 1}},
            {"name": "both-no-a", "kind": "ablation", "components": {"b": 1}},
            {"name": "both-no-b", "kind": "ablation", "components": {"a": 1}},
        ],
        "ablations": [
            {"arm": "both", "removed": "a", "as": "both-no-a"},
            {"arm": "both", "removed": "b", "as": "both-no-b"},
        ],
    }
    scores = _scores(
        rng, n, {"baseline": 0.0, "both": ab, "both-no-a": b, "both-no-b": a}, sd_diff=0.002
    )
    return arms, scores


def test_ablations_contributions_and_interaction() -> None:
    rng = np.random.default_rng(4)
    # additive: a adds 0.02, b adds 0.01, together 0.03
    arms, scores = _factorial(rng, 12, 0.02, 0.01, 0.03)
    hyp = Hypothesis(smallest_effect=0.005)
    comps, abl, (inter,) = analyze_scores(scores, arms, "max", hyp, FAST)
    contrib = {c.removed: c for c in abl}
    assert contrib["a"].effect == pytest.approx(0.02, abs=0.004)
    assert contrib["b"].effect == pytest.approx(0.01, abs=0.004)
    assert {c.verdict for c in abl} == {"better"}
    assert {c.family for c in abl} == {"ablations of both"}
    assert inter.additive is True
    assert inter.interval[0] <= 0 <= inter.interval[1]
    # synergy: each alone adds nothing, together 0.03
    arms, scores = _factorial(rng, 12, 0.0, 0.0, 0.03)
    _, _, (inter,) = analyze_scores(scores, arms, "max", hyp, FAST)
    assert inter.additive is False and inter.interaction == pytest.approx(0.03, abs=0.005)
    assert comps[0].verdict == "better"


def test_plan_seeds_uses_the_pilot_sd_and_the_cap() -> None:
    rng = np.random.default_rng(5)
    arms = {"arms": ARMS["arms"][:3], "ablations": []}
    scores = _scores(rng, 5, {"baseline": 0.0, "up": 0.01, "down": 0.0}, sd_diff=0.01)
    plan = plan_seeds(
        scores, arms, "max", smallest_effect=0.01, alpha=0.05, power=0.8, max_seeds=1000
    )
    sds = {a: plan["arms"][a]["sd_diff"] for a in ("up", "down")}
    want = max(stats.required_seeds(sd, 0.01, alpha=0.05 / 2, power=0.8) for sd in sds.values())
    assert plan["needed"] == want and plan["seeds"] == max(want, 5) and not plan["capped"]
    capped = plan_seeds(scores, arms, "max", smallest_effect=0.001, alpha=0.05, power=0.8,
                        max_seeds=20)  # fmt: skip
    assert capped["capped"] and capped["seeds"] == 20 and capped["needed"] > 20


# -- real runs -----------------------------------------------------------------------------------
NOISE_ARMS = """
[arms.clean]
noise = 0.0

[arms.noisier]
noise = 14.0
"""


def _run(path: Path, store: str, backend=None) -> tuple[Ledger, object]:
    spec = load_spec(path)
    ledger = Ledger(store)
    run_experiment(spec, ledger, backend or InlineBackend(), show_progress=False)
    return ledger, ledger.experiment(spec.experiment_id)


def test_report_of_a_real_run_in_every_format(
    write_spec: Callable[..., Path], store_url: str, tmp_path: Path
) -> None:
    body = toy_spec("noise", seeds=8, arms=NOISE_ARMS, extra="").replace(
        "noise = 0.0\n    mode", "noise = 7.0\n    mode"
    )
    body += "\n[hypothesis]\nclaim = 'less noise helps'\nsmallest_effect = 0.005\n"
    ledger, exp = _run(write_spec(body), store_url)
    analysis = analyze(ledger, exp, FAST)
    doc = analysis.to_dict()
    assert analysis.comparison("clean").verdict == "better"
    verdict = {c["arm"]: c["verdict"] for c in doc["comparisons"]}
    assert verdict == {"clean": "better", "noisier": "worse"}
    # the JSON is stable and says how every number was made
    loaded = json.loads(render_json(analysis))
    assert loaded["experiment"]["claim"] == "less noise helps"
    assert set(loaded["comparisons"][0]) >= {
        "arm", "against", "effect", "interval", "p", "p_adjusted", "d_z",
        "prob_improvement", "verdict", "mde", "seeds_needed",
    }  # fmt: skip
    # 8 paired seeds: the settings state the paired t interval the comparisons used
    assert loaded["settings"]["method"]["interval"]["methods"] == ["paired t"]
    assert {c["interval_method"] for c in loaded["comparisons"]} == {"paired t"}
    assert loaded["settings"]["effect_interval"].startswith("95% paired t interval")
    # predictions: arms disagree on some test examples, shown with the truth
    pred = doc["predictions"]
    assert pred["n_disagree"] > 0 and pred["examples"]
    ex = pred["examples"][0]
    assert set(ex["arms"]) == {"baseline", "clean", "noisier"}
    assert len({p["prediction"] for p in ex["arms"].values()}) > 1
    assert pred["input"] == {"kind": "image", "shape": [8, 8]}
    # compute: every arm metered, every comparison with its cost ratios
    wall = doc["arms"]["baseline"]["compute"]["figures"]["wall_time"]
    assert wall["n"] == 8 and wall["mean"] > 0 and wall["total"] >= wall["mean"]
    flops = doc["arms"]["clean"]["compute"]["figures"]["flops"]
    assert flops["mean"] is None and flops["method"].startswith("not counted")
    cost = doc["comparisons"][0]["cost"]
    assert (
        cost["time"] > 0
        and cost["flops"] is None
        and "the time" in doc["comparisons"][0]["cost_text"]
    )
    assert doc["compute"]["settings"]["grid_intensity"] == 436.0
    md = render_md(analysis)
    assert "▲ better" in md and "▼ worse" in md and "### Methods" in md
    assert "### Compute per trial" in md and "hardware:" in md
    tex = render_tex(analysis)
    assert r"\toprule" in tex and r"\blacktriangle" in tex and "noisier" in tex
    curves = learning_curves(ledger, exp)
    assert curves["metric"] == "val_accuracy" and set(curves["arms"]) == {
        "baseline", "clean", "noisier"
    }  # fmt: skip
    html = render_html(analysis, {"curves": curves})
    assert html.count("<svg") >= 4 + len(pred["examples"])  # figures + drawn inputs
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in html
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(render_text(analysis))
    text = console.export_text()
    assert text.index("Verdicts") < text.index("Arms:")


def test_html_escapes_names_from_the_spec(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    body = toy_spec("esc", seeds=3, arms="[arms.noisy]\nnoise = 3.0\n")
    body += '\n[hypothesis]\nclaim = "<script>alert(1)</script> & co"\n'
    ledger, exp = _run(write_spec(body), str(tmp_path / "l.db"))
    html = render_html(analyze(ledger, exp, FAST))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_failures_dropped_or_scored_worst(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    arms = """
    [arms.flaky]
    noise = 1.0
    """
    body = toy_spec("flaky", seeds=4, arms=arms)
    ledger, exp = _run(write_spec(body), str(tmp_path / "l.db"))
    # make seed 2 of the arm a failure, as a crashed trial would be stored
    from sqlalchemy import update

    from fairtrial.ledger import schema

    with ledger.engine.begin() as c:
        c.execute(
            update(schema.trials)
            .where(schema.trials.c.id == ledger.trial_at(exp.id, "flaky", 2).id)
            .values(status="failed", result=None, error="RuntimeError: boom")
        )
    dropped = analyze(ledger, exp, FAST).to_dict()
    assert dropped["arms"]["flaky"]["n"] == 3 and dropped["arms"]["flaky"]["failed"] == 1
    assert dropped["comparisons"][0]["n_pairs"] == 3
    worst = analyze(ledger, exp, Options(failures="worst", n_resamples=2000)).to_dict()
    assert worst["comparisons"][0]["n_pairs"] == 4
    lowest = min(v for a in dropped["arms"].values() for v in a["values"])
    assert worst["arms"]["flaky"]["values"][2] == lowest
    assert "worst" in worst["settings"]["failures"]


@pytest.mark.slow
def test_seeds_auto_runs_a_pilot_then_the_planned_seeds(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    body = toy_spec("auto", seeds=2, arms="[arms.noisy]\nnoise = 3.0\n").replace(
        "seeds = 2", 'seeds = "auto"\nmax_seeds = 9'
    )
    body += "\n[hypothesis]\nsmallest_effect = 0.002\n"
    ledger, exp = _run(write_spec(body), str(tmp_path / "l.db"), LocalBackend(workers=2))
    analysis = analyze(ledger, exp, FAST)
    doc = analysis.to_dict()
    plan = doc["experiment"]["seed_plan"]
    assert plan["pilot"] == 5 and plan["max_seeds"] == 9
    assert exp.seeds == plan["seeds"] == len(doc["arms"]["baseline"]["seeds"])
    assert plan["seeds"] == min(max(plan["needed"], 5), 9)
    assert re.search(r"pilot of 5 seeds asked for \d+", render_md(analysis))
    # the plan is a function of the pilot's results: running again adds nothing
    spec = load_spec(Path(exp.spec_path or ""))
    again = run_experiment(spec, ledger, InlineBackend(), show_progress=False)
    assert again.ran == 0


def test_two_seeds_and_no_hypothesis_analyse_without_error() -> None:
    arms = {"arms": ARMS["arms"][:2], "ablations": []}
    scores = {"baseline": {0: 0.90, 1: 0.91}, "up": {0: 0.92, 1: 0.95}}
    (c,), _, _ = analyze_scores(scores, arms, "max", Hypothesis(), FAST)
    assert c.verdict == "inconclusive" and c.mde > c.effect > 0


@pytest.mark.parametrize(
    ("pairs", "intervals", "tests"),
    [
        ([6], ["paired t"], ["exact sign-flip permutation"]),
        ([20], ["BCa bootstrap"], ["exact sign-flip permutation"]),
        ([21], ["BCa bootstrap"], ["Monte Carlo sign-flip permutation"]),
        ([5, 50], ["paired t", "BCa bootstrap"], [
            "exact sign-flip permutation", "Monte Carlo sign-flip permutation"
        ]),
        ([1, 0], [], []),
    ],
)  # fmt: skip
def test_method_states_what_compare_does(
    pairs: list[int], intervals: list[str], tests: list[str]
) -> None:
    m = method(Hypothesis(alpha=0.1), FAST, pairs, ["arms vs baseline"])
    assert m["interval"] == {"methods": intervals, "confidence": 0.9}
    assert m["test"] == {"methods": tests}
    used = [n for n in pairs if n >= 2]
    assert m["paired_seeds"] == ([min(used), max(used)] if used else None)
    rng = np.random.default_rng(3)
    for n in used:  # at each end of the range, compare() uses one of the methods stated
        base = rng.normal(size=n)
        c = compare(base, base + 0.1 + rng.normal(size=n), Hypothesis(alpha=0.1), n_resamples=2000,
                    rng=rng)  # fmt: skip
        assert c["interval_method"] in intervals
        assert c["p_method"].split(" (")[0] in tests
    # the report's settings are the method's data and the words derived from it
    s = settings(m)
    assert s["method"] == m and s["confidence"] == 0.9 and s["resamples"] == 2000
    assert {k: s[k] for k in method_text(m)} == method_text(m)
    assert s["arm_interval"].endswith("90%")


def test_method_changes_name_each_setting() -> None:
    hyp = Hypothesis(smallest_effect=0.01)
    six = method(hyp, Options(), [6], ["arms vs baseline"])
    assert method_changes(six, six) == []
    worst = method(hyp, Options(failures="worst", seed=1), [21], ["arms vs baseline"])
    assert method_changes(six, worst) == [
        "interval: paired t (95%) → BCa bootstrap (95%)",
        "test: exact sign-flip permutation → Monte Carlo sign-flip permutation (10000 resamples)",
        "failures: drop → worst",
        "random seed: 0 → 1",
    ]
    # seeds = "auto" registers the methods of every seed count it may reach: a run on some of
    # them keeps to the plan, and the seed counts are the preregistration's seed check
    auto = method(hyp, Options(), [5, 50], ["arms vs baseline"])
    assert method_changes(auto, six) == [] and method_changes(auto, worst) != []
    assert method_changes(six, auto) == [
        "interval: paired t (95%) → paired t / BCa bootstrap (95%)",
        "test: exact sign-flip permutation → exact sign-flip permutation / Monte Carlo "
        "sign-flip permutation (10000 resamples)",
    ]
    other = method(Hypothesis(alpha=0.1), Options(), [6], ["arms vs baseline", "ablations of a"])
    assert method_changes(six, other) == [
        "alpha: 0.05 → 0.1",
        "interval: paired t (95%) → paired t (90%)",
        "correction: Holm within arms vs baseline → Holm within arms vs baseline; ablations of a",
        "equivalence: TOST within ±0.01 → none (no [hypothesis] smallest_effect)",
    ]
