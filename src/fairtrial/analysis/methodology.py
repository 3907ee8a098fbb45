"""The method of an analysis as data, and in words: one source for the report's ``settings``
and a preregistration's frozen plan.

:func:`method` states every setting the analysis uses for a hypothesis and the seed counts it
compares, as plain data; :func:`settings` and :func:`method_text` turn it into the report's
words, and :func:`method_changes` names how a run departed from a registered plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fairtrial.analysis.costs import COST_FIGURES
from fairtrial.analysis.verdicts import (
    BCA_MIN_PAIRS,
    VERDICT_RULE,
    Options,
    arm_summary,
    holm_families,
    worst_score,
)
from fairtrial.ledger import ExperimentRow, Ledger
from fairtrial.plan import paired_values
from fairtrial.record import DesignInfo, ExperimentRecord, Hypothesis
from fairtrial.stats.permutation import MAX_EXACT_N


def method(
    hyp: Hypothesis,
    options: Options,
    pairs: Iterable[int],
    families: Sequence[str],
    *,
    primary: str = "metric",
    design: DesignInfo | None = None,
) -> dict[str, Any]:
    """Every setting the analysis uses, as plain data (names and values, no prose).

    The report's ``settings`` (:func:`settings`) and a preregistration's frozen plan are both
    derived from it, so what is registered and what is reported cannot drift apart.
    ``pairs``: the paired seeds of each comparison (for a plan: the seeds it gives, or with
    ``seeds = "auto"`` the fewest and the most it may give); a comparison of fewer than 2 has
    no interval and no test. ``interval`` and ``test`` list every method those seed counts use
    (both when they straddle :data:`BCA_MIN_PAIRS` or the exact test's limit). A speed trial
    (``primary`` a time) adds ``primary``, a factorial design ``design``: the keys are absent
    otherwise, so plans registered before them still match.
    """
    used = [n for n in pairs if n >= 2]
    lo, hi = (min(used), max(used)) if used else (0, 0)
    intervals = [
        name
        for name, applies in (
            ("paired t", lo < BCA_MIN_PAIRS),
            ("BCa bootstrap", hi >= BCA_MIN_PAIRS),
        )
        if used and applies
    ]
    tests = [
        name
        for name, applies in (
            ("exact sign-flip permutation", lo <= MAX_EXACT_N),
            ("Monte Carlo sign-flip permutation", hi > MAX_EXACT_N),
        )
        if used and applies
    ]
    return {
        "paired_seeds": [lo, hi] if used else None,
        "pairing": "seed",
        "effect": "mean paired difference",
        "alpha": hyp.alpha,
        "interval": {"methods": intervals, "confidence": 1.0 - hyp.alpha},
        "test": {"methods": tests},
        "correction": {"method": "Holm", "families": list(families)},
        "equivalence": {
            "method": None if hyp.smallest_effect is None else "TOST",
            "margin": hyp.smallest_effect,
        },
        "verdict": [{"verdict": v, "when": list(when)} for v, when in VERDICT_RULE],
        "power": hyp.power,
        "failures": options.failures,
        "resamples": options.n_resamples,
        "random_seed": options.seed,
        **(
            {
                "primary": {
                    "outcome": primary,
                    "cost_margin": hyp.cost_margin,
                    "guard": "metric non-inferior within smallest_effect",
                }
            }
            if primary != "metric"
            else {}
        ),
        **({"design": _design_method(design)} if design is not None else {}),
    }


def _design_method(design: DesignInfo) -> dict[str, Any]:
    return {
        "kind": design.kind,
        "arm": design.arm,
        "factors": list(design.factors),
        "resolution": design.resolution,
        "interactions": design.interactions,
        "effect": "per-seed contrast, high minus low level",
        "correction": "Holm over every listed term",
    }


def cost_rule(hyp: Hypothesis) -> str:
    """How every cost figure is compared, in words (from the constants the analysis uses)."""
    figures = ", ".join(figure.replace("_", " ") for figure in COST_FIGURES)
    lo, hi = 1 / (1 + hyp.cost_margin), 1 + hyp.cost_margin
    return (
        f"each cost figure measured on both arms ({figures}) is compared paired by seed on "
        "the log scale: the ratio arm / against is the geometric mean of the per-seed ratios, "
        f"its interval the exponential of the log ratios' paired t interval (below "
        f"{BCA_MIN_PAIRS} pairs) or BCa bootstrap interval (from {BCA_MIN_PAIRS}); sign-flip "
        "permutation test on the log ratios, Holm per figure within each family; faster "
        f"(cheaper) or slower (costlier) when the adjusted p < {hyp.alpha:g} and the interval "
        f"lies below (above) 1, same when TOST shows the ratio within {lo:.3g}..{hi:.3g}; a "
        "figure equal on every seed (FLOPs) is an exact ratio, without a test; a time "
        "difference within the timing noise measured between repeated identical trials is "
        "never called faster or slower; a seed whose trial was its process's first (it pays "
        "one-time costs: lazy imports, kernel caches) is left out of the time and energy "
        "comparisons, as are trials of a batched model (its members share their time)"
    )


def _primary_text(m: Mapping[str, Any]) -> str:
    p = m["primary"]
    margin = m["equivalence"]["margin"]
    return (
        f"a speed trial: the verdict is about {str(p['outcome']).replace('_', ' ')}, the "
        f"metric is a guard. faster (same) when {str(p['outcome']).replace('_', ' ')} is "
        f"faster (the same) and the metric is non-inferior: the lower bound of its "
        f"{_pct(1 - 2 * m['alpha'])} paired t interval above -{margin:g}; worse when the "
        "metric is worse; slower when it is slower; else inconclusive"
    )


def _design_text(m: Mapping[str, Any]) -> str:
    d = m["design"]
    what = (
        "full factorial"
        if d["kind"] == "factorial"
        else (f"fractional factorial of resolution {d['resolution']} or more")
    )
    return (
        f"{what} over the {len(d['factors'])} components of arm {d['arm']}: each main effect "
        "and interaction up to order "
        f"{d['interactions']} is the mean over seeds of its per-seed contrast (high minus low "
        "level, averaged over the other factors), with intervals and tests as for effects and "
        "Holm over every listed term; higher-order interactions pooled"
    )


def _pct(confidence: float) -> str:
    return f"{round(confidence * 100, 4):g}%"


def _labels(m: Mapping[str, Any]) -> dict[str, Callable[[], str]]:
    def interval() -> str:
        iv = m["interval"]
        return f"{' / '.join(iv['methods']) or 'none'} ({_pct(iv['confidence'])})"

    def test() -> str:
        names = [
            f"{name} ({m['resamples']} resamples)" if name.startswith("Monte Carlo") else name
            for name in m["test"]["methods"]
        ]
        return " / ".join(names) or "none"

    def equivalence() -> str:
        eq = m["equivalence"]
        if eq["method"] is None:
            return "none (no [hypothesis] smallest_effect)"
        return f"{eq['method']} within ±{eq['margin']:g}"

    def verdict() -> str:
        margin = m["equivalence"]["margin"]
        rules = []
        for rule in m["verdict"]:
            when = rule["when"]
            if not when:
                rules.append(f"else {rule['verdict']}")
            elif margin is None and any("{margin}" in c for c in when):
                rules.append(f"{rule['verdict']}: needs [hypothesis] smallest_effect")
            else:
                words = " and ".join(c.format(alpha=m["alpha"], margin=margin) for c in when)
                rules.append(f"{rule['verdict']}: {words}")
        return "; ".join(rules)

    def seeds() -> str:
        lo, hi = m["paired_seeds"] or (None, None)
        return "none" if lo is None else str(lo) if lo == hi else f"{lo}–{hi}"

    return {
        "paired_seeds": seeds,
        "pairing": lambda: f"by {m['pairing']}",
        "interval": interval,
        "test": test,
        "correction": lambda: (
            f"{m['correction']['method']} within "
            + ("; ".join(m["correction"]["families"]) or "no family")
        ),
        "equivalence": equivalence,
        "verdict": verdict,
    }


def method_labels(m: Mapping[str, Any]) -> dict[str, str]:
    """Each setting of the method data ``m`` in a few words ("paired t (95%)")."""
    special = _labels(m)
    out: dict[str, str] = {}
    for key, value in m.items():
        try:
            out[key] = special[key]() if key in special else str(value)
        except (KeyError, TypeError, ValueError, AttributeError):  # data of another shape
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


def method_text(m: Mapping[str, Any]) -> dict[str, str]:
    """The method data ``m`` in words, as the report's methods section prints it."""
    label = method_labels(m)
    iv, pct, resamples = m["interval"]["methods"], _pct(m["interval"]["confidence"]), m["resamples"]
    bca = f"BCa bootstrap (Efron 1987, {resamples} resamples)"
    if iv == ["paired t"]:
        interval = (
            f"{pct} paired t interval: below {BCA_MIN_PAIRS} paired seeds bootstrap intervals "
            "are too narrow (the BCa interval is reported alongside)"
        )
    elif iv == ["BCa bootstrap"]:
        interval = f"{pct} {bca}; the paired t interval alongside"
    elif iv:
        interval = (
            f"{pct}: {bca} from {BCA_MIN_PAIRS} paired seeds on; below that the paired t "
            "interval, because bootstrap intervals are too narrow with few seeds (both are "
            "reported)"
        )
    else:
        interval = f"{pct}: none, no comparison has 2 paired seeds"
    tests = {
        (): "none, no comparison has 2 paired seeds",
        ("exact sign-flip permutation",): "exact sign-flip permutation test on the paired "
        "differences (all 2^n sign flips)",
        ("Monte Carlo sign-flip permutation",): "Monte Carlo sign-flip permutation test on the "
        f"paired differences ({resamples} resamples)",
        ("exact sign-flip permutation", "Monte Carlo sign-flip permutation"): "sign-flip "
        f"permutation test on the paired differences, exact up to {MAX_EXACT_N} pairs, Monte "
        f"Carlo ({resamples} resamples) beyond",
    }
    test = tests.get(tuple(m["test"]["methods"]), label["test"])
    return {
        "pairing": "by seed: seed i of every arm shares its init, data-order and dropout streams"
        if m["pairing"] == "seed"
        else label["pairing"],
        "effect": f"{m['effect']}, positive = better in the metric's direction",
        "effect_interval": interval,
        "test": f"{test}; paired t-test alongside",
        "multiple_comparisons": "Holm (1979) within each family: "
        + ("; ".join(m["correction"]["families"]) or "none")
        if m["correction"]["method"] == "Holm"
        else label["correction"],
        "equivalence": f"TOST (Schuirmann 1987) within ±{m['equivalence']['margin']:g} at alpha "
        f"{m['alpha']}"
        if m["equivalence"]["method"] == "TOST"
        else label["equivalence"],
        "verdict": label["verdict"],
        "effect_size": "d_z = mean / sd of the paired differences; P(improvement) = share of "
        "seeds where the arm beats the other (ties count half), bootstrap interval",
        "power_analysis": f"minimum detectable effect and seeds needed: exact paired t-test power "
        f"{m['power']} (noncentral t); seeds needed at alpha / family size",
        "interaction": "sum of the components' contributions minus the arm's total effect, "
        "with an interval chosen like the effect's; additive when the interval includes 0",
        "arm_interval": f"Student t interval of the mean, {pct}",
        **({"primary": _primary_text(m)} if "primary" in m else {}),
        **({"design": _design_text(m)} if "design" in m else {}),
        "failures": "dropped: a comparison uses the seeds both arms finished; failed and "
        "diverged trials are counted per arm"
        if m["failures"] == "drop"
        else "worst: a failed or diverged seed scores the worst score of any trial",
    }


def _kept(registered: Any, run: Any) -> bool:
    """Whether the run kept to a registered setting: a run on some of the seed counts a plan
    allows (seeds = "auto") may use only some of the methods registered for them."""
    if isinstance(registered, Mapping) and isinstance(run, Mapping) and "methods" in registered:
        others = {k for k in set(registered) | set(run) if k != "methods"}
        return set(run.get("methods") or []) <= set(registered["methods"]) and all(
            registered.get(k) == run.get(k) for k in others
        )
    return bool(registered == run)


def method_changes(registered: Mapping[str, Any], run: Mapping[str, Any]) -> list[str]:
    """How the ``run``'s method departs from the ``registered`` one, one line per setting:
    "interval: paired t (95%) → BCa bootstrap (95%)". The seed counts themselves are left to
    the preregistration's seed check."""
    before, after = method_labels(registered), method_labels(run)
    return [
        f"{key.replace('_', ' ')}: {before.get(key, 'not set')} → {after.get(key, 'not set')}"
        for key in dict.fromkeys([*registered, *run])
        if key != "paired_seeds" and not _kept(registered.get(key), run.get(key))
    ]


def settings(m: Mapping[str, Any]) -> dict[str, Any]:
    """Every statistical choice of the analysis, as the report prints it: the method data
    ``m`` (:func:`method`), under ``method``, and in words."""
    return {
        "confidence": m["interval"]["confidence"],
        "alpha": m["alpha"],
        "power": m["power"],
        "smallest_effect": m["equivalence"]["margin"],
        **method_text(m),
        "resamples": m["resamples"],
        "random_seed": m["random_seed"],
        "method": dict(m),
    }


def method_of(
    scores: Mapping[str, Mapping[int, float]],
    arm_table: Mapping[str, Any],
    hyp: Hypothesis,
    options: Options,
    deterministic: bool = False,
    *,
    primary: str = "metric",
    design: DesignInfo | None = None,
) -> dict[str, Any]:
    """The method :func:`~fairtrial.analysis.verdicts.analyze_scores` uses on these per-arm
    ``{seed: score}`` maps."""
    compared = [(a["name"], "baseline") for a in arm_table["arms"] if a["kind"] == "arm"]
    compared += [(ab["arm"], ab["as"]) for ab in arm_table["ablations"]]
    pairs = [len(paired_values(scores, arm, against)[0]) for arm, against in compared]
    if deterministic:  # one run per arm: no interval, no test
        pairs = [min(n, 1) for n in pairs]
    return method(hyp, options, pairs, holm_families(arm_table), primary=primary, design=design)


def run_method(ledger: Ledger, exp: ExperimentRow, options: Options = Options()) -> dict[str, Any]:
    """The method the analysis uses on ``exp``'s trials as they stand, without running it."""
    record = ExperimentRecord.from_row(exp)
    trials = ledger.trials(exp.id)
    fail_score = worst_score(trials, exp.direction, options)
    scores = {
        a.name: arm_summary(
            [t for t in trials if t.arm == a.name], record.hypothesis.confidence, fail_score
        ).scores
        for a in record.arms
    }
    return method_of(
        scores, exp.arms, record.hypothesis, options, record.deterministic,
        primary=record.primary, design=record.design,
    )  # fmt: skip
