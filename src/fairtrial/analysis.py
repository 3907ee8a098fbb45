"""From per-seed results to verdicts: the experiment's result document (DESIGN.md's JSON).

The statistics are the defaults of DESIGN.md, each one written into ``settings``:

* Arms are paired by seed. A comparison uses the seeds both arms finished (or, with
  ``failures="worst"``, every seed both arms ran, a failed seed scoring the worst score any
  trial of the experiment reached).
* Effect = mean paired difference, signed so that positive is better in the metric's direction,
  with a BCa bootstrap interval (paired t-interval alongside).
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fairtrial import diff, meter, prereg, stats, testlog
from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
from fairtrial.plan import paired_values, plan_seeds, seeds_needed

FailurePolicy = Literal["drop", "worst"]
#: from this many paired seeds on, the effect's interval is the BCa bootstrap; below, paired t
BCA_MIN_PAIRS = 20
VERDICTS = ("better", "worse", "equivalent", "inconclusive")


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
    ps = [c["p"] for c in family]
    idx = [i for i, p in enumerate(ps) if p is not None]
    adjusted: list[float] = [float(p) for p in stats.holm([ps[i] for i in idx])] if idx else []
    for c in family:
        c["p_adjusted"] = None
    for i, p in zip(idx, adjusted, strict=True):
        family[i]["p_adjusted"] = _p(p)
    for c in family:
        judge(c, hyp, max(len(idx), 1))


def analyze_scores(
    scores: Mapping[str, Mapping[int, float]],
    arm_table: Mapping[str, Any],
    direction: str,
    hyp: Hypothesis,
    options: Options = Options(),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Comparisons, ablations and interactions from per-arm ``{seed: score}`` maps.

    Pure: the same scores give the same document, whatever the ledger. ``arm_table`` is the
    spec's ``arm_table()`` (arms with kind and components; ablations as arm/removed/as).
    """
    sign = 1.0 if direction == "max" else -1.0
    signed = {a: {s: sign * v for s, v in m.items()} for a, m in scores.items()}
    counter = iter(range(10**6))

    def one(arm: str, against: str) -> dict[str, Any]:
        _, a, b = paired_values(signed, arm, against)
        rng = np.random.default_rng([options.seed, next(counter)])
        return compare(a, b, hyp, n_resamples=options.n_resamples, rng=rng)

    comparisons = [
        {"arm": a["name"], "against": "baseline", "family": "arms vs baseline"}
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
            "family": f"ablations of {ab['arm']}",
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
    finished = [float(t.result) for t in trials if t.status == "finished" and t.result is not None]
    worst = None
    if options.failures == "worst" and finished:
        worst = min(finished) if exp.direction == "max" else max(finished)
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
    comparisons, ablations, interactions = analyze_scores(
        scores, exp.arms, exp.direction, hyp, options
    )
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
            "preregistered": prereg.status(ledger, exp),
            "task_checksum": exp.task_checksum,
            "seeds": exp.seeds,
            "root_seed": exp.root_seed,
            "claim": exp.spec.get("hypothesis", {}).get("claim", ""),
            "trials": len(trials),
            "test_evaluations": len(ledger.test_evaluations(exp.id)),
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
        "settings": settings(hyp, options),
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


def settings(hyp: Hypothesis, options: Options) -> dict[str, Any]:
    """Every statistical choice of the analysis, as the report prints it."""
    conf = 1.0 - hyp.alpha
    return {
        "confidence": conf,
        "alpha": hyp.alpha,
        "power": hyp.power,
        "smallest_effect": hyp.smallest_effect,
        "pairing": "by seed: seed i of every arm shares its init, data-order and dropout streams",
        "failures": "dropped: a comparison uses the seeds both arms finished; failed and "
        "diverged trials are counted per arm"
        if options.failures == "drop"
        else "worst: a failed or diverged seed scores the worst score of any trial",
        "arm_interval": f"Student t interval of the mean, {conf:.0%}",
        "effect": "mean paired difference, positive = better in the metric's direction",
        "effect_interval": f"{conf:.0%}: BCa bootstrap (Efron 1987, {options.n_resamples} "
        f"resamples) from {BCA_MIN_PAIRS} paired seeds on; below that the paired t interval, "
        "because bootstrap intervals are too narrow with few seeds (both are reported)",
        "test": "sign-flip permutation test on the paired differences, exact up to 20 pairs, "
        f"Monte Carlo ({options.n_resamples} resamples) beyond; paired t-test alongside",
        "multiple_comparisons": "Holm (1979) within each family: arms vs baseline; "
        "each arm vs its ablations",
        "verdict": f"better/worse: adjusted p < {hyp.alpha} and the interval excludes 0; "
        + (
            f"equivalent: TOST (Schuirmann 1987) within ±{hyp.smallest_effect:g}; "
            if hyp.smallest_effect is not None
            else "equivalent: needs [hypothesis] smallest_effect; "
        )
        + "else inconclusive",
        "effect_size": "d_z = mean / sd of the paired differences; P(improvement) = share of "
        "seeds where the arm beats the other (ties count half), bootstrap interval",
        "power_analysis": f"minimum detectable effect and seeds needed: exact paired t-test power "
        f"{hyp.power} (noncentral t); seeds needed at alpha / family size",
        "interaction": "sum of the components' contributions minus the arm's total effect, "
        "with an interval chosen like the effect's; additive when the interval includes 0",
        "random_seed": options.seed,
    }


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
