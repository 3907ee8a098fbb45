"""From per-seed results to verdicts: the experiment's result document (DESIGN.md's JSON).

The statistics are fairtrial's defaults; :func:`method` states, as data, which of them an
analysis uses, and both the report's ``settings`` and a preregistration are derived from it:

* Arms are paired by seed. A comparison uses the seeds both arms finished (or, with
  ``failures="worst"``, every seed both arms ran, a failed seed scoring the worst score any
  trial of the experiment reached).
* Effect = mean paired difference, signed so that positive is better in the metric's direction,
  with the paired t interval below 20 paired seeds and the BCa bootstrap from 20 on (both are
  reported).
* Test = exact sign-flip permutation test (Monte Carlo past 20 pairs), paired t-test alongside;
  Holm's correction within each family: (1) every arm against the baseline, (2) for each arm
  with ablations, the arm against each of its ablations.
* Verdict: ``better``/``worse`` when the adjusted p is below alpha *and* the interval excludes 0;
  ``equivalent`` when TOST shows the effect within ±smallest_effect; else ``inconclusive``, with
  the minimum detectable effect at the seeds used and the seeds needed to detect smallest_effect.
* Ablations: each component's contribution (the arm minus the arm without it) and the
  interaction, sum of contributions minus the total effect (0 when the components add up).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fairtrial import diff, meter, prereg, stats, testlog
from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
from fairtrial.plan import paired_values, plan_seeds, seeds_needed
from fairtrial.stats.permutation import MAX_EXACT_N

FailurePolicy = Literal["drop", "worst"]
#: from this many paired seeds on, the effect's interval is the BCa bootstrap; below, paired t
BCA_MIN_PAIRS = 20
#: The verdict rule, in order: a comparison gets the first verdict whose conditions all hold
#: (:func:`judge` applies it; :func:`method` freezes it). ``{alpha}`` is the hypothesis' alpha,
#: ``{margin}`` its smallest_effect.
VERDICT_RULE: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the data cannot support a verdict, whatever the statistics say
    (
        "invalid",
        ("every seed of an arm gave identical test predictions (the recipe ignores its seeds)",),
    ),
    ("better", ("Holm-adjusted p < {alpha}", "the interval excludes 0", "the effect is positive")),
    ("worse", ("Holm-adjusted p < {alpha}", "the interval excludes 0", "the effect is negative")),
    ("equivalent", ("TOST shows the effect within ±{margin}",)),
    ("inconclusive", ()),
)
VERDICTS = tuple(verdict for verdict, _ in VERDICT_RULE)
#: Holm's first family: every arm against the baseline (then each arm against its ablations)
ARMS_FAMILY = "arms vs baseline"


@dataclass(frozen=True)
class Hypothesis:
    """What the spec's [hypothesis] table fixes for the analysis."""

    smallest_effect: float | None = None
    alpha: float = 0.05
    power: float = 0.8

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Hypothesis:
        h = spec.get("hypothesis") or {}
        se = h.get("smallest_effect")
        return cls(
            smallest_effect=None if se is None else float(se),
            alpha=float(h.get("alpha", 0.05)),
            power=float(h.get("power", 0.8)),
        )


@dataclass(frozen=True)
class Options:
    """How to analyse; every field is written into the report's ``settings``.

    Attributes:
        failures: ``"drop"`` compares the seeds both arms finished; ``"worst"`` scores a failed
            or diverged seed as the worst score any trial of the experiment reached.
        n_resamples: bootstrap resamples (and Monte Carlo permutations past 20 pairs).
        seed: seed of the analysis' random generators (one per comparison), so a report is
            the same every time it is rendered.
    """

    failures: FailurePolicy = "drop"
    n_resamples: int = 10_000
    seed: int = 0
    #: overrides of the experiment's [compute] settings (e.g. from ``report --grid-intensity``)
    grid_intensity: float | None = None
    grid_intensity_source: str | None = None
    pue: float | None = None
    price_per_hour: float | None = None


def _r(x: float | None, digits: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else round(x, digits)


def _p(x: float | None) -> float | None:
    """p-values keep their precision (small ones matter in their exponent)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _iv(low: float | None, high: float | None, digits: int = 6) -> list[float | None] | None:
    if low is None or high is None:
        return None
    return [_r(low, digits), _r(high, digits)]


# -- per arm ------------------------------------------------------------------------------------
def _t_interval(values: np.ndarray[Any, Any], confidence: float) -> list[float | None] | None:
    from scipy import stats as sps

    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return _iv(mean - half, mean + half)


def arm_summary(
    trials: Sequence[TrialRow], confidence: float, worst: float | None = None
) -> dict[str, Any]:
    """n, failures, per-seed values, mean, sd and t-interval of one arm's test scores."""
    done = sorted((t for t in trials if t.status == "finished"), key=lambda t: t.seed)
    lost = sorted((t for t in trials if t.status in ("failed", "diverged")), key=lambda t: t.seed)
    scored = [(t.seed, float(t.result or 0.0)) for t in done]
    if worst is not None:
        scored = sorted(scored + [(t.seed, worst) for t in lost])
    values = np.array([v for _, v in scored], dtype=float)
    walls = [t.wall_time for t in done if t.wall_time is not None]
    return {
        "n": len(done),
        "failed": len(lost),
        "diverged": sum(t.status == "diverged" for t in lost),
        "pending": sum(t.status not in ("finished", "failed", "diverged") for t in trials),
        "seeds": [s for s, _ in scored],
        "values": [_r(v) for v in values.tolist()],
        "mean": _r(float(values.mean())) if len(values) else None,
        "sd": _r(float(values.std(ddof=1))) if len(values) > 1 else None,
        "interval": _t_interval(values, confidence),
        "compute": {
            "wall_time_mean_s": _r(float(np.mean(walls)), 4) if walls else None,
            "wall_time_total_s": _r(float(np.sum(walls)), 4) if walls else None,
        },
        "failures": [{"seed": t.seed, "status": t.status, "reason": t.error} for t in lost],
    }


# -- comparisons --------------------------------------------------------------------------------
def compare(
    base: np.ndarray[Any, Any],
    arm: np.ndarray[Any, Any],
    hyp: Hypothesis,
    *,
    n_resamples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Every statistic of one paired comparison (scores already signed: higher is better).

    The verdict needs the family's adjusted p; :func:`judge` adds it afterwards.
    """
    n = len(base)
    diffs = arm - base
    out: dict[str, Any] = {
        "n_pairs": n,
        "effect": _r(float(diffs.mean())) if n else None,
        "sd_diff": _r(float(diffs.std(ddof=1))) if n > 1 else None,
        "interval": None,
        "interval_method": None,
        "bca_interval": None,
        "t_interval": None,
        "p": None,
        "p_method": None,
        "p_t": None,
        "d_z": None,
        "prob_improvement": None,
        "tost": None,
        "mde": None,
        "wins": int(np.sum(diffs > 0)),
        "losses": int(np.sum(diffs < 0)),
        "ties": int(np.sum(diffs == 0)),
    }
    if n < 2:
        return out
    confidence = 1.0 - hyp.alpha
    ci = stats.paired_bootstrap_ci(
        base, arm, confidence=confidence, n_resamples=n_resamples, rng=rng
    )
    perm = stats.paired_permutation_test(base, arm, n_resamples=n_resamples, rng=rng)
    tt = stats.paired_t_test(base, arm, confidence=confidence)
    poi = stats.probability_of_improvement(
        base, arm, paired=True, confidence=confidence, n_resamples=n_resamples, rng=rng
    )
    sd = float(diffs.std(ddof=1))
    # Bootstrap intervals are too narrow with few seeds (95% BCa covered about 90% of simulated
    # effects at 10 pairs, 93-97% from 20 on): below BCA_MIN_PAIRS the t interval is the one used
    bca = n >= BCA_MIN_PAIRS
    out.update(
        interval=_iv(ci.low, ci.high) if bca else _iv(ci.t_low, ci.t_high),
        interval_method="BCa bootstrap" if bca else "paired t",
        bca_interval=_iv(ci.low, ci.high),
        t_interval=_iv(ci.t_low, ci.t_high),
        p=_p(perm.pvalue),
        p_method="exact sign-flip permutation"
        if perm.exact
        else f"Monte Carlo sign-flip permutation ({perm.n_resamples} resamples)",
        p_t=_p(tt.pvalue),
        d_z=_r(stats.cohens_dz(base, arm), 4),
        prob_improvement={
            "estimate": _r(poi.estimate, 4),
            "interval": _iv(poi.low, poi.high, 4),
        },
        # identical differences on every seed: any effect at all would be detected
        mde=0.0 if sd == 0 else _r(sd * _unit_mde(n, hyp.alpha, hyp.power)),
    )
    if hyp.smallest_effect is not None:
        tost = stats.tost_paired(base, arm, margin=hyp.smallest_effect, alpha=hyp.alpha)
        out["tost"] = {
            "pvalue": _p(tost.pvalue),
            "equivalent": bool(tost.equivalent),
            "margin": hyp.smallest_effect,
            "interval": _iv(tost.low, tost.high),
        }
    return out


@functools.lru_cache(maxsize=256)
def _unit_mde(n: int, alpha: float, power: float) -> float:
    """The minimum detectable effect in units of the sd of the paired differences.

    The paired t-test's power depends on effect / sd only, so one root-finding per (n, alpha,
    power) serves every comparison.
    """
    return float(stats.minimum_detectable_effect(1.0, n, alpha=alpha, power=power))


def judge(c: dict[str, Any], hyp: Hypothesis, family_size: int) -> None:
    """Set ``verdict``, ``reason`` and ``seeds_needed`` of a comparison with ``p_adjusted``."""
    c["seeds_needed"] = None
    if c.get("invalid"):
        c["verdict"] = "invalid"
        c["reason"] = c["invalid"]
        return
    if c.get("deterministic"):
        c["verdict"], c["reason"] = c.pop("run_verdict", ("inconclusive", "no run of an arm"))
        return
    if c["n_pairs"] < 2:
        c["verdict"] = "inconclusive"
        c["reason"] = f"{c['n_pairs']} paired seed(s): at least 2 are needed"
        return
    p_adj, iv, tost = c["p_adjusted"], c["interval"], c["tost"]
    excludes_zero = iv is not None and (iv[0] > 0 or iv[1] < 0)
    if p_adj is not None and p_adj < hyp.alpha and excludes_zero:
        c["verdict"] = "better" if c["effect"] > 0 else "worse"
        c["reason"] = f"adjusted p = {_fmt_p(p_adj)} < {hyp.alpha} and the interval excludes 0"
        return
    if tost is not None and tost["equivalent"]:
        c["verdict"] = "equivalent"
        c["reason"] = (
            f"TOST: the effect lies within ±{hyp.smallest_effect:g} (p = {_fmt_p(tost['pvalue'])})"
        )
        return
    c["verdict"] = "inconclusive"
    if p_adj is not None and p_adj < hyp.alpha:
        c["reason"] = "the test rejects but the bootstrap interval includes 0"
    else:
        c["reason"] = f"adjusted p = {_fmt_p(p_adj)} ≥ {hyp.alpha}" + (
            f" and not shown equivalent within ±{hyp.smallest_effect:g}"
            if hyp.smallest_effect is not None
            else " (no smallest_effect to test equivalence against)"
        )
    if hyp.smallest_effect is not None and c["sd_diff"] is not None:
        # Holm's first step tests at alpha/m: plan for that (Bonferroni) threshold
        c["seeds_needed"] = seeds_needed(
            c["sd_diff"], hyp.smallest_effect, hyp.alpha / family_size, hyp.power
        )


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _adjust(family: list[dict[str, Any]], hyp: Hypothesis) -> None:
    # an invalid comparison's p says nothing: it neither counts in the family nor is adjusted
    ps = [None if c.get("invalid") else c["p"] for c in family]
    idx = [i for i, p in enumerate(ps) if p is not None]
    adjusted: list[float] = [float(p) for p in stats.holm([ps[i] for i in idx])] if idx else []
    for c in family:
        c["p_adjusted"] = None
    for i, p in zip(idx, adjusted, strict=True):
        family[i]["p_adjusted"] = _p(p)
    for c in family:
        judge(c, hyp, max(len(idx), 1))


def compare_runs(
    signed: Mapping[str, Mapping[int, float]], arm: str, against: str, hyp: Hypothesis
) -> dict[str, Any]:
    """One run per arm (``deterministic = true``): the difference of the two runs' scores.

    A recipe without randomness gives the same result on every seed, so there is no
    seed-to-seed spread to test against: the difference is exact for this data. With
    ``smallest_effect`` a difference within it is ``equivalent``; otherwise any difference
    decides. Further seeds are checks: one that differs from seed 0 makes the comparison
    ``invalid`` (the recipe is not deterministic). The test split's own sampling error is
    not modelled.
    """
    a, b = signed.get(against, {}), signed.get(arm, {})
    out: dict[str, Any] = {
        "n_pairs": 1 if 0 in a and 0 in b else 0,
        "effect": None,
        "sd_diff": None,
        "interval": None,
        "interval_method": "none: one run per arm (deterministic recipe)",
        "bca_interval": None,
        "t_interval": None,
        "p": None,
        "p_method": "none: one run per arm (deterministic recipe)",
        "p_t": None,
        "d_z": None,
        "prob_improvement": None,
        "tost": None,
        "mde": None,
        "wins": 0,
        "losses": 0,
        "ties": 0,
        "deterministic": True,
    }
    for name, runs in ((arm, b), (against, a)):
        if len(set(runs.values())) > 1:
            seeds = ", ".join(str(s) for s in sorted(runs))
            out["invalid"] = (
                f"deterministic = true, but the seeds of arm {name} ({seeds}) gave different "
                "results: the recipe has randomness; remove deterministic = true"
            )
            return out
    if not out["n_pairs"]:
        return out
    effect = b[0] - a[0]
    out.update(
        effect=_r(effect),
        wins=int(effect > 0),
        losses=int(effect < 0),
        ties=int(effect == 0),
    )
    se = hyp.smallest_effect
    if se is not None and abs(effect) < se:
        out["run_verdict"] = ("equivalent", f"one run per arm: |difference| < {se:g}")
    elif effect == 0:
        out["run_verdict"] = ("equivalent", "one run per arm: identical scores")
    else:
        word = "better" if effect > 0 else "worse"
        margin = f" ≥ {se:g}" if se is not None else ""
        out["run_verdict"] = (word, f"one run per arm: the difference{margin} is exact")
    return out


def seed_blind_reason(arm: str, seeds: Sequence[int]) -> str:
    """Why a comparison with a seed-blind arm is ``invalid`` (one line)."""
    return (
        f"every seed of arm {arm} ({len(seeds)}) gave the same result: the recipe does not "
        "use its seeds (or set deterministic = true if it has no randomness)"
    )


def seed_blind_arms(
    arm_seeds: Mapping[str, Mapping[int, Any]],
    predictions: Mapping[str, Mapping[int, str]],
) -> dict[str, str]:
    """Arms whose seeds did not reach the recipe's randomness: ``{arm: reason}``.

    An arm with at least two finished seeds is seed-blind when every seed's test predictions
    are identical (the same sha256; ``predictions`` maps arm -> seed -> hash); for an arm
    without recorded predictions, when at least three seeds gave the very same score
    (``arm_seeds``: arm -> seed -> score). Equal scores alone can happen by chance on a small
    test set; equal predictions from different seeds, every time, do not.
    """
    out: dict[str, str] = {}
    for arm, by_seed in arm_seeds.items():
        seeds = sorted(by_seed)
        hashes = predictions.get(arm) or {}
        if all(s in hashes for s in seeds) and seeds:
            blind = len(seeds) >= 2 and len({hashes[s] for s in seeds}) == 1
        else:
            blind = len(seeds) >= 3 and len(set(by_seed.values())) == 1
        if blind:
            out[arm] = seed_blind_reason(arm, seeds)
    return out


def analyze_scores(
    scores: Mapping[str, Mapping[int, float]],
    arm_table: Mapping[str, Any],
    direction: str,
    hyp: Hypothesis,
    options: Options = Options(),
    *,
    seed_blind: Mapping[str, str] | None = None,
    deterministic: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Comparisons, ablations and interactions from per-arm ``{seed: score}`` maps.

    Pure: the same scores give the same document, whatever the ledger. ``arm_table`` is the
    spec's ``arm_table()`` (arms with kind and components; ablations as arm/removed/as).
    ``seed_blind`` (:func:`seed_blind_arms`): arms whose seeds all gave the same result; every
    comparison involving one is ``invalid``. ``deterministic``: the recipe has no randomness
    (the spec says so): each arm is one run (its seed 0), compared by :func:`compare_runs`.
    """
    sign = 1.0 if direction == "max" else -1.0
    signed = {a: {s: sign * v for s, v in m.items()} for a, m in scores.items()}
    counter = iter(range(10**6))
    blind = dict(seed_blind or {})

    def one(arm: str, against: str) -> dict[str, Any]:
        if deterministic:
            return compare_runs(signed, arm, against, hyp)
        _, a, b = paired_values(signed, arm, against)
        rng = np.random.default_rng([options.seed, next(counter)])
        out = compare(a, b, hyp, n_resamples=options.n_resamples, rng=rng)
        why = blind.get(arm) or blind.get(against)
        if why:
            out["invalid"] = why
        return out

    comparisons = [
        {"arm": a["name"], "against": "baseline", "family": ARMS_FAMILY}
        | one(a["name"], "baseline")
        for a in arm_table["arms"]
        if a["kind"] == "arm"
    ]
    _adjust(comparisons, hyp)
    ablations: list[dict[str, Any]] = []
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for ab in arm_table["ablations"]:
        entry = {
            "arm": ab["arm"],
            "against": ab["as"],
            "removed": ab["removed"],
            "ablation_arm": ab["as"],
            "family": ablation_family(ab["arm"]),
        } | one(ab["arm"], ab["as"])
        ablations.append(entry)
        by_arm.setdefault(ab["arm"], []).append(entry)
    for family in by_arm.values():
        _adjust(family, hyp)
    interactions = [
        _interaction(signed, arm, [e["ablation_arm"] for e in fam], hyp, options)
        for arm, fam in by_arm.items()
    ]
    return comparisons, ablations, interactions


def _interaction(
    signed: Mapping[str, Mapping[int, float]],
    arm: str,
    ablation_arms: list[str],
    hyp: Hypothesis,
    options: Options,
) -> dict[str, Any]:
    """Do the components add up? Sum of contributions minus the arm's total effect, per seed.

    With components A and B this is (AB - A) - (B - baseline): the gain of B with A present
    minus its gain alone; positive means the components reinforce each other.
    """
    involved = [arm, "baseline", *ablation_arms]
    seeds = sorted(set.intersection(*(set(signed.get(a, {})) for a in involved)))
    out: dict[str, Any] = {"arm": arm, "ablations": ablation_arms, "n_pairs": len(seeds)}
    if len(seeds) < 2:
        return out | {"interaction": None, "interval": None, "additive": None}
    total = np.array([signed[arm][s] - signed["baseline"][s] for s in seeds])
    contrib = sum(np.array([signed[arm][s] - signed[ab][s] for s in seeds]) for ab in ablation_arms)
    # interaction_i = contrib_i - total_i; bootstrap it as the difference "contrib - total"
    rng = np.random.default_rng([options.seed, 999_983])
    ci = stats.paired_bootstrap_ci(
        total,
        np.asarray(contrib, dtype=float),
        confidence=1.0 - hyp.alpha,
        n_resamples=options.n_resamples,
        rng=rng,
    )
    low, high = (ci.low, ci.high) if len(seeds) >= BCA_MIN_PAIRS else (ci.t_low, ci.t_high)
    return out | {
        "total_effect": _r(float(total.mean())),
        "sum_of_contributions": _r(float(np.mean(contrib))),
        "interaction": _r(ci.effect),
        "interval": _iv(low, high),
        "additive": bool(low <= 0 <= high),
    }


# -- the whole experiment -------------------------------------------------------------------------
def analyze(
    ledger: Ledger,
    exp: ExperimentRow,
    options: Options = Options(),
    *,
    extras: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The result document of one experiment (stable keys; see DESIGN.md)."""
    trials = ledger.trials(exp.id)
    hyp = Hypothesis.from_spec(exp.spec)
    by_arm: dict[str, list[TrialRow]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    worst = _worst(trials, exp.direction, options)
    confidence = 1.0 - hyp.alpha
    arms = {
        a["name"]: {
            **arm_summary(by_arm.get(a["name"], []), confidence, worst),
            "kind": a["kind"],
            "components": a["components"],
        }
        for a in exp.arms["arms"]
    }
    scores = {name: dict(zip(a["seeds"], a["values"], strict=True)) for name, a in arms.items()}
    current = {t.id: t for t in trials if t.status == "finished"}
    hashes: dict[str, dict[int, str]] = {}
    evaluations = ledger.test_evaluations(exp.id)  # every stored prediction: read once
    for ev in evaluations:
        tr = current.get(ev["trial_id"])
        if tr is not None and ev["attempt"] == tr.attempt:
            hashes.setdefault(tr.arm, {})[tr.seed] = ev["predictions_sha256"]
    deterministic = bool(exp.spec.get("experiment", {}).get("deterministic"))
    finished_scores = {
        name: {t.seed: float(t.result or 0.0) for t in rows if t.id in current}
        for name, rows in by_arm.items()
    }
    blind = {} if deterministic else seed_blind_arms(finished_scores, hashes)
    for name, a in arms.items():
        a["seed_blind"] = name in blind
    comparisons, ablations, interactions = analyze_scores(
        scores, exp.arms, exp.direction, hyp, options, seed_blind=blind, deterministic=deterministic
    )
    used = _method_of(scores, exp.arms, hyp, options, deterministic)
    compute = _compute(ledger, exp, by_arm, trials, options)
    for name, a in arms.items():
        a["compute"].update(compute["arms"].get(name, {}))
    for c in comparisons + ablations:
        ratios = meter.cost_ratios(arms[c["arm"]]["compute"], arms[c["against"]]["compute"])
        c["cost"] = ratios
        c["cost_text"] = meter.format_cost_ratios(ratios)
    doc: dict[str, Any] = {
        "experiment": {
            "id": exp.id,
            "name": exp.name,
            "task": exp.task,
            "metric": exp.metric,
            "direction": exp.direction,
            "spec_hash": exp.spec_hash,
            "preregistered": prereg.status(ledger, exp, used),
            "task_checksum": exp.task_checksum,
            "seeds": exp.seeds,
            "root_seed": exp.root_seed,
            "claim": exp.spec.get("hypothesis", {}).get("claim", ""),
            "trials": len(trials),
            # the code version(s) of the trials in this verdict (one, unless trials from
            # before identities are mixed in) and how many were reused from other experiments
            "code": sorted({t.code_hash or "unrecorded" for t in trials if t.attempt > 0}),
            "reused": sum(t.reused for t in trials),
            "test_evaluations": len(evaluations),
            "test_log": testlog.summary(ledger, exp),
            "arm_isolation": diff.arm_isolation(ledger, exp),
        },
        "arms": arms,
        "comparisons": comparisons,
        "ablations": ablations,
        "interactions": interactions,
        "compute": {
            "settings": compute["settings"],
            "hardware": compute["hardware"],
            "worker_startup": compute["worker_startup"],
        },
        "provenance": _provenance(ledger, trials),
        "settings": settings(used),
        "predictions": disagreements(ledger, exp),
        "config_reads": _config_reads(ledger, exp),
    }
    if exp.spec.get("experiment", {}).get("seeds") == "auto" and hyp.smallest_effect:
        max_seeds = int(exp.spec["experiment"].get("max_seeds") or exp.seeds)
        doc["experiment"]["seed_plan"] = plan_seeds(
            scores,
            exp.arms,
            exp.direction,
            smallest_effect=hyp.smallest_effect,
            alpha=hyp.alpha,
            power=hyp.power,
            max_seeds=max_seeds,
        )
    if extras:
        doc.update(extras)
    return doc


def _compute(
    ledger: Ledger,
    exp: ExperimentRow,
    by_arm: Mapping[str, Sequence[TrialRow]],
    trials: Sequence[TrialRow],
    options: Options,
) -> dict[str, Any]:
    """Per-arm compute summaries (every ended trial's record), settings and hardware."""
    settings = meter.ComputeSettings.from_table(
        ledger.compute_settings(exp.id),
        grid_intensity=options.grid_intensity,
        grid_intensity_source=options.grid_intensity_source,
        pue=options.pue,
        price_per_hour=options.price_per_hour,
    )
    records = ledger.compute(exp.id)
    arms = {
        name: meter.summarize_arm(
            [records[t.id] for t in rows if t.id in records and t.status != "pending"], settings
        )
        for name, rows in by_arm.items()
    }
    provs = [
        ledger.provenance(pid)
        for pid in sorted({t.provenance_id for t in trials if t.provenance_id})
    ]
    return {
        "arms": arms,
        "settings": settings.as_dict(),
        "hardware": meter.hardware_summary(provs),
        "worker_startup": meter.worker_startup(list(records.values())),
    }


def _config_reads(ledger: Ledger, exp: ExperimentRow) -> dict[str, Any] | None:
    """Config keys no finished trial of an arm read (None: all read, or not recorded)."""
    from fairtrial.configreads import experiment_unread, unread_text

    found = experiment_unread(ledger, exp.id)
    if found is None:
        return None
    command = exp.spec.get("experiment", {}).get("command") is not None
    return {**found, "text": unread_text(found, command=command)}


# -- the method: one source for the report's settings and the preregistration's frozen plan ------
def ablation_family(arm: str) -> str:
    """Holm's family of ``arm`` against each of its ablations."""
    return f"ablations of {arm}"


def holm_families(arm_table: Mapping[str, Any]) -> list[str]:
    """The families in which :func:`analyze_scores` corrects for multiple comparisons."""
    arms = [ARMS_FAMILY] if any(a["kind"] == "arm" for a in arm_table["arms"]) else []
    return arms + list(dict.fromkeys(ablation_family(ab["arm"]) for ab in arm_table["ablations"]))


def method(
    hyp: Hypothesis, options: Options, pairs: Iterable[int], families: Sequence[str]
) -> dict[str, Any]:
    """Every setting the analysis uses, as plain data (names and values, no prose).

    The report's ``settings`` (:func:`settings`) and a preregistration's frozen plan are both
    derived from it, so what is registered and what is reported cannot drift apart.
    ``pairs``: the paired seeds of each comparison (for a plan: the seeds it gives, or with
    ``seeds = "auto"`` the fewest and the most it may give); a comparison of fewer than 2 has
    no interval and no test. ``interval`` and ``test`` list every method those seed counts use
    (both when they straddle :data:`BCA_MIN_PAIRS` or the exact test's limit).
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
    }


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


def _worst(trials: Sequence[TrialRow], direction: str, options: Options) -> float | None:
    """The score of a failed seed with ``failures="worst"``: the worst any trial reached."""
    finished = [float(t.result) for t in trials if t.status == "finished" and t.result is not None]
    if options.failures != "worst" or not finished:
        return None
    return min(finished) if direction == "max" else max(finished)


def _method_of(
    scores: Mapping[str, Mapping[int, float]],
    arm_table: Mapping[str, Any],
    hyp: Hypothesis,
    options: Options,
    deterministic: bool = False,
) -> dict[str, Any]:
    """The method of :func:`analyze_scores` on these per-arm ``{seed: score}`` maps."""
    compared = [(a["name"], "baseline") for a in arm_table["arms"] if a["kind"] == "arm"]
    compared += [(ab["arm"], ab["as"]) for ab in arm_table["ablations"]]
    pairs = [len(paired_values(scores, arm, against)[0]) for arm, against in compared]
    if deterministic:  # one run per arm: no interval, no test
        pairs = [min(n, 1) for n in pairs]
    return method(hyp, options, pairs, holm_families(arm_table))


def run_method(ledger: Ledger, exp: ExperimentRow, options: Options = Options()) -> dict[str, Any]:
    """The method :func:`analyze` uses on ``exp``'s trials as they stand, without running it."""
    trials = ledger.trials(exp.id)
    hyp = Hypothesis.from_spec(exp.spec)
    worst = _worst(trials, exp.direction, options)
    scores: dict[str, dict[int, float]] = {}
    for a in exp.arms["arms"]:
        summary = arm_summary([t for t in trials if t.arm == a["name"]], 1.0 - hyp.alpha, worst)
        scores[a["name"]] = dict(zip(summary["seeds"], summary["values"], strict=True))
    deterministic = bool(exp.spec.get("experiment", {}).get("deterministic"))
    return _method_of(scores, exp.arms, hyp, options, deterministic)


def _provenance(ledger: Ledger, trials: Sequence[TrialRow]) -> dict[str, Any]:
    prov_ids = sorted({t.provenance_id for t in trials if t.provenance_id})
    if not prov_ids:
        return {}
    p = ledger.provenance(prov_ids[-1])
    git = p.get("git", {})
    return {
        "fairtrial": p.get("fairtrial"),
        "python": p.get("python"),
        "os": p.get("os"),
        "cpu": p.get("cpu"),
        "cpu_count": p.get("cpu_count"),
        "gpus": p.get("gpus"),
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty"),
        "packages": len(p.get("packages", {})),
        "run": p.get("run"),
        "records": len(prov_ids),
    }


# -- what the figures and the predictions table show ----------------------------------------------
def learning_curves(
    ledger: Ledger, exp: ExperimentRow, name: str | None = None, confidence: float = 0.95
) -> dict[str, Any]:
    """Per arm, the mean curve of metric ``name`` across seeds with a t-interval band.

    ``name`` defaults to ``val_<metric>`` (what the built-in recipes log each epoch), else the
    first metric any trial logged. Only the steps every finished seed of an arm logged are
    averaged, so the band never mixes different sets of seeds.
    """
    trials = [t for t in ledger.trials(exp.id) if t.status == "finished"]
    points = (
        (t.arm, t.seed, step, metric, value)
        for t in trials
        for _, step, _, metric, value in ledger.metrics(t.id, t.attempt)
    )
    return curves_from_points(points, exp, name, confidence)


def curves_from_points(
    points: Iterable[tuple[str, int, int | None, str, float]],
    exp: ExperimentRow,
    name: str | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """:func:`learning_curves` from ``(arm, seed, step, metric, value)`` points of finished
    trials (the ledger's, or a bundle's ``results/metrics.jsonl``)."""
    from scipy import stats as sps

    series: dict[str, dict[str, dict[int, dict[int, float]]]] = {}
    names: list[str] = []
    for arm, seed, step, metric, value in points:
        if metric not in names:
            names.append(metric)
        if step is not None and math.isfinite(value):
            series.setdefault(metric, {}).setdefault(arm, {}).setdefault(seed, {})[int(step)] = (
                float(value)
            )
    if name is None:
        want = f"val_{exp.metric}"
        name = want if want in series else next((n for n in names if n in series), None)
    out: dict[str, Any] = {"metric": name, "available": [n for n in names if n in series]}
    arms: dict[str, Any] = {}
    for arm, by_seed in (series.get(name, {}) if name else {}).items():
        steps = sorted(set.intersection(*(set(v) for v in by_seed.values())))
        if not steps:
            continue
        m = np.array([[by_seed[s][st] for st in steps] for s in sorted(by_seed)], dtype=float)
        mean = m.mean(axis=0)
        n = m.shape[0]
        if n > 1:
            half = sps.t.ppf(0.5 + confidence / 2, n - 1) * m.std(axis=0, ddof=1) / math.sqrt(n)
        else:
            half = np.zeros_like(mean)
        arms[arm] = {
            "steps": steps,
            "mean": mean.tolist(),
            "low": (mean - half).tolist(),
            "high": (mean + half).tolist(),
            "seeds": n,
        }
    out["arms"] = {a["name"]: arms[a["name"]] for a in exp.arms["arms"] if a["name"] in arms}
    return out


def disagreements(ledger: Ledger, exp: ExperimentRow, limit: int = 12) -> dict[str, Any] | None:
    """Test examples on which the arms' predictions differ (classification tasks).

    Each arm's prediction for an example is its most common label across its seeds, with the
    share of seeds that agree; the examples shown are those where the arms' labels differ,
    most contested first. Returns None when the task is not a classification task or no
    predictions were recorded.
    """
    from fairtrial.tasks import get_task

    base = None
    if exp.spec_path:
        from pathlib import Path

        base = Path(exp.spec_path).parent
    try:
        task = get_task(exp.task, base)
    except Exception:
        return None
    if task.kind != "classification":
        return None
    trials = {t.id: t for t in ledger.trials(exp.id) if t.status == "finished"}
    preds: dict[str, list[np.ndarray[Any, Any]]] = {}
    for ev in ledger.test_evaluations(exp.id):
        t = trials.get(ev["trial_id"])
        if t is None or ev["attempt"] != t.attempt:
            continue
        preds.setdefault(t.arm, []).append(np.asarray(ev["predictions"]))
    order = [a["name"] for a in exp.arms["arms"] if a["name"] in preds]
    return disagreement_table(preds, order, task, limit)


def majority_votes(
    preds: Mapping[str, Sequence[Any]], order: Sequence[str]
) -> dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """Per arm, each test example's most common label across seeds and the share that chose it.

    ``preds`` maps an arm to its seeds' prediction vectors (one label per test example).
    """
    votes: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
    for arm in order:
        m = np.stack([np.asarray(p) for p in preds[arm]])  # seeds × examples
        labels, inv = np.unique(m, return_inverse=True)
        inv = inv.reshape(m.shape)
        counts = np.stack([(inv == k).sum(axis=0) for k in range(len(labels))])
        top = counts.argmax(axis=0)
        votes[arm] = (labels[top], counts.max(axis=0) / m.shape[0])
    return votes


def disagreement_table(
    preds: Mapping[str, Sequence[Any]], order: Sequence[str], task: Any, limit: int = 12
) -> dict[str, Any] | None:
    """:func:`disagreements` from each arm's per-seed predictions and the task they scored."""
    if len(order) < 2:
        return None
    truth = task.y[task.test_idx]
    votes = majority_votes(preds, order)
    if any(len(votes[a][0]) != len(truth) for a in order):
        return None
    majority = np.stack([votes[a][0] for a in order])
    differ = np.flatnonzero((majority != majority[0]).any(axis=0))
    # most contested first: arms split on the label and the seeds agree least
    agreement = np.stack([votes[a][1] for a in order]).mean(axis=0)
    ranked = differ[np.lexsort((differ, agreement[differ]))]
    examples = [
        {
            "index": int(i),
            "truth": _plain(truth[i]),
            "arms": {
                a: {
                    "prediction": _plain(votes[a][0][i]),
                    "agreement": round(float(votes[a][1][i]), 3),
                }
                for a in order
            },
        }
        for i in ranked[:limit]
    ]
    correct = {a: round(float(np.mean(votes[a][0] == truth)), 6) for a in order}
    return {
        "n_test": len(truth),
        "n_disagree": len(differ),
        "seeds": {a: len(preds[a]) for a in order},
        "majority_vote_accuracy": correct,
        "examples": examples,
        "inputs": {str(e["index"]): task.x[task.test_idx[e["index"]]].tolist() for e in examples},
        "input": _input_shape(task),
    }


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _input_shape(task: Any) -> dict[str, Any] | None:
    """How to draw an input: an image, a 1-D signal, a few numbers as text, or not at all."""
    if task.meta.get("image_shape"):
        return {"kind": "image", "shape": [int(v) for v in task.meta["image_shape"]]}
    if task.meta.get("seq_length"):
        return {"kind": "signal", "length": int(task.meta["seq_length"])}
    if task.x.ndim == 2 and task.x.shape[1] <= 8:
        return {"kind": "values"}
    return None
