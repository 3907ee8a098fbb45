"""Paired statistics and verdicts: from per-arm ``{seed: score}`` maps to judged comparisons.

Pure functions, no ledger: :func:`analyze_scores` gives the comparisons, ablations and
interactions of an experiment as :mod:`fairtrial.results` records.

The statistics are fairtrial's defaults (:mod:`fairtrial.analysis.methodology` states them as data):

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fairtrial import stats
from fairtrial.analysis.unpaired import compare_unpaired, seed_overlap
from fairtrial.ledger import TrialRow
from fairtrial.plan import paired_values, seeds_needed
from fairtrial.record import LOST, Hypothesis, sign, worst
from fairtrial.results import Ablation, ArmSummary, Comparison, Interaction

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
    trials: Sequence[TrialRow],
    confidence: float,
    worst: float | None = None,
    *,
    kind: str | None = None,
    components: Mapping[str, Any] | None = None,
) -> ArmSummary:
    """n, failures, per-seed values, mean, sd and t-interval of one arm's test scores."""
    done = sorted((t for t in trials if t.status == "finished"), key=lambda t: t.seed)
    lost = sorted((t for t in trials if t.status in LOST), key=lambda t: t.seed)
    scored = [(t.seed, float(t.result or 0.0)) for t in done]
    if worst is not None:
        scored = sorted(scored + [(t.seed, worst) for t in lost])
    values = np.array([v for _, v in scored], dtype=float)
    walls = [t.wall_time for t in done if t.wall_time is not None]
    return ArmSummary.from_dict(
        {
            "n": len(done),
            "failed": len(lost),
            "diverged": sum(t.status == "diverged" for t in lost),
            "pending": sum(t.status != "finished" and t.status not in LOST for t in trials),
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
            "kind": kind,
            "components": dict(components or {}),
        }
    )


def worst_score(trials: Sequence[TrialRow], direction: str, options: Options) -> float | None:
    """The score of a failed seed with ``failures="worst"``: the worst any trial reached."""
    if options.failures != "worst":
        return None
    finished = [float(t.result) for t in trials if t.status == "finished" and t.result is not None]
    return worst(finished, direction)


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
    _judge(c, hyp, family_size)
    if c.get("unpaired") and not c.get("invalid"):
        c["reason"] = f"unpaired, the arms share no seed (Welch t): {c['reason']}"


def _judge(c: dict[str, Any], hyp: Hypothesis, family_size: int) -> None:
    c["seeds_needed"] = None
    if c.get("invalid"):
        c["verdict"] = "invalid"
        c["reason"] = c["invalid"]
        return
    if c.get("deterministic"):
        c["verdict"], c["reason"] = c.pop("run_verdict", ("inconclusive", "no run of an arm"))
        return
    if c["n_pairs"] < 2 and not c.get("unpaired"):
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
    imported: bool = False,
) -> tuple[list[Comparison], list[Ablation], list[Interaction]]:
    """Comparisons, ablations and interactions from per-arm ``{seed: score}`` maps.

    Pure: the same scores give the same document, whatever the ledger. ``arm_table`` is the
    spec's ``arm_table()`` (arms with kind and components; ablations as arm/removed/as).
    ``seed_blind`` (:func:`seed_blind_arms`): arms whose seeds all gave the same result; every
    comparison involving one is ``invalid``. ``deterministic``: the recipe has no randomness
    (the spec says so): each arm is one run (its seed 0), compared by :func:`compare_runs`.
    ``imported``: the scores were not run by fairtrial (``fairtrial analyze``): each comparison
    counts the seeds it left out (``dropped_seeds``), and two arms that share no seed are
    compared unpaired (:func:`~fairtrial.analysis.unpaired.compare_unpaired`).
    """
    k = sign(direction)
    signed = {a: {s: k * v for s, v in m.items()} for a, m in scores.items()}
    counter = iter(range(10**6))
    blind = dict(seed_blind or {})

    def one(arm: str, against: str) -> dict[str, Any]:
        if deterministic:
            return compare_runs(signed, arm, against, hyp)
        seeds, a, b = paired_values(signed, arm, against)
        rng = np.random.default_rng([options.seed, next(counter)])
        if imported and not seeds and min(len(signed.get(x, {})) for x in (arm, against)) >= 2:
            a = np.array([v for _, v in sorted(signed[against].items())], dtype=float)
            b = np.array([v for _, v in sorted(signed[arm].items())], dtype=float)
            out = compare_unpaired(a, b, hyp, n_resamples=options.n_resamples, rng=rng)
        else:
            out = compare(a, b, hyp, n_resamples=options.n_resamples, rng=rng)
        if imported:
            out["dropped_seeds"] = seed_overlap(signed, arm, against)
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
    return (
        [Comparison.from_dict(c) for c in comparisons],
        [Ablation.from_dict(c) for c in ablations],
        [Interaction.from_dict(i) for i in interactions],
    )


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


def ablation_family(arm: str) -> str:
    """Holm's family of ``arm`` against each of its ablations."""
    return f"ablations of {arm}"


def holm_families(arm_table: Mapping[str, Any]) -> list[str]:
    """The families in which :func:`analyze_scores` corrects for multiple comparisons."""
    arms = [ARMS_FAMILY] if any(a["kind"] == "arm" for a in arm_table["arms"]) else []
    return arms + list(dict.fromkeys(ablation_family(ab["arm"]) for ab in arm_table["ablations"]))
