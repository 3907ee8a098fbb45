"""What each change cost, tested as what it gained is: every cost figure measured on both arms
of a comparison, paired by seed on the log scale, with a verdict; and the speed trial, whose
verdict is about a time and whose metric is a non-inferiority guard.

Pure functions on per-seed compute figures (``arm -> seed -> {record key: value}``, the
latest attempt of each finished trial), so the ledger, a bundle and the registry reach the
same verdicts.

* The ratio is the geometric mean of the per-seed ratios arm / against, its interval the
  exponential of the interval of the mean log ratio (paired t below 20 pairs, BCa bootstrap
  from 20 on, as for effects); the test is the sign-flip permutation test on the log ratios,
  Holm-adjusted per figure within the comparison's family.
* ``same`` needs TOST to show the ratio within 1 ± the cost margin (5% unless
  ``[hypothesis] cost_margin`` says otherwise), on the log scale.
* A figure that is the same on every seed (FLOPs of a fixed model) is an exact ratio: no test.
* A time difference within the timing noise measured between repeated identical trials is
  never called ``faster`` or ``slower``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fairtrial import stats
from fairtrial.claims import CostVerdict, SpeedGuard, figure_words
from fairtrial.record import Hypothesis
from fairtrial.results import Comparison

#: figure -> (the compute record's keys, the first one both arms have; a time?; unit)
COST_FIGURES: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "train_time": (("train_time",), True, "s"),
    "time_to_target": (("time_to_target",), True, "s"),
    "wall_time": (("wall_time",), True, "s"),
    "cpu_time": (("cpu_time",), True, "s"),
    "flops": (("flops",), False, "FLOP"),
    "memory": (("gpu_peak_allocated", "peak_rss"), False, "bytes"),
    "energy": (("energy",), False, "J"),
}
#: the time figures whose spread between repeated identical trials is the timing noise
NOISE_FIGURES = ("train_time", "wall_time", "time_to_target", "cpu_time")


def _value(record: Mapping[str, Any], key: str) -> float | None:
    v = record.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) and v > 0 else None


#: figures a process's first trial inflates (it pays the one-time costs of lazy imports,
#: kernel and allocator caches): a pair with such a trial is left out of their comparisons
COLD = ("train_time", "time_to_target", "wall_time", "cpu_time", "energy")


def _cold(record: Mapping[str, Any]) -> bool:
    return bool(record.get("first_in_process") or record.get("worker_startup"))


#: figures a batched model's members share (each is charged an equal part): not their own
_SHARED = ("train_time", "time_to_target", "wall_time", "cpu_time", "memory", "energy")


def _pairs(
    costs: Mapping[str, Mapping[int, Mapping[str, Any]]], arm: str, against: str, figure: str
) -> tuple[str | None, list[int], list[float], list[float], int]:
    """(basis, seeds, arm values, against values, seeds missing the figure) of one figure."""
    a, b = costs.get(arm) or {}, costs.get(against) or {}
    seeds = sorted(set(a) & set(b))
    if figure in _SHARED:
        seeds = [s for s in seeds if not a[s].get("batched") and not b[s].get("batched")]
    if figure in COLD:
        seeds = [s for s in seeds if not _cold(a[s]) and not _cold(b[s])]
    keys, _, _ = COST_FIGURES[figure]
    for key in keys:
        have = [s for s in seeds if _value(a[s], key) is not None and _value(b[s], key) is not None]
        if have:
            return (
                key,
                have,
                [float(_value(a[s], key) or 0.0) for s in have],
                [float(_value(b[s], key) or 0.0) for s in have],
                len(set(a) | set(b)) - len(have),
            )
    return None, [], [], [], len(set(a) | set(b))


def timing_noise(
    costs: Mapping[str, Mapping[int, Mapping[str, Any]]],
    repeated: Sequence[str],
    repeats: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
) -> dict[str, Any] | None:
    """The spread of train time (else wall time) between repeated identical trials: every
    seed of each arm in ``repeated`` runs the same computation (a deterministic recipe), and
    each trial of ``repeats`` (arm -> seed -> record) ran the computation of that arm and seed
    a second time. A process's first trial is left out (it pays one-time costs)."""
    for key in NOISE_FIGURES:
        groups = [
            [v for s in sorted(costs.get(arm) or {}) if (v := _warm(costs[arm][s], key))]
            for arm in repeated
        ]
        for arm, by_seed in (repeats or {}).items():
            for seed, again in by_seed.items():
                first = (costs.get(arm) or {}).get(seed)
                pair = [_warm(r, key) for r in (first, again) if r is not None]
                groups.append([v for v in pair if v is not None])
        found = stats.timing_noise([g for g in groups if len(g) >= 2])
        if found is not None:
            return {**found.to_dict(), "figure": key}
    return None


def _warm(record: Mapping[str, Any], key: str) -> float | None:
    return None if _cold(record) or record.get("batched") else _value(record, key)


def _test(
    arm_values: Sequence[float], against_values: Sequence[float], hyp: Hypothesis, rng: Any
) -> Any:
    return stats.paired_log_ratio(
        np.asarray(arm_values, dtype=float),
        np.asarray(against_values, dtype=float),
        confidence=hyp.confidence,
        margin=hyp.cost_margin,
        alpha=hyp.alpha,
        rng=rng,
    )


def cost_verdicts(
    costs: Mapping[str, Mapping[int, Mapping[str, Any]]],
    judged: Sequence[Comparison],
    hyp: Hypothesis,
    *,
    seed: int = 0,
    noise: Mapping[str, Any] | None = None,
) -> list[dict[str, CostVerdict]]:
    """Per comparison of ``judged`` (in order): figure -> its :class:`CostVerdict`."""
    found: list[dict[str, tuple[Any, dict[str, Any]]]] = []
    for i, c in enumerate(judged):
        per: dict[str, tuple[Any, dict[str, Any]]] = {}
        for j, figure in enumerate(COST_FIGURES):
            basis, seeds, a, b, missing = _pairs(costs, c.arm, c.against, figure)
            if len(seeds) < 2:
                continue
            rng = np.random.default_rng([seed, 7919, i, j])
            per[figure] = (
                _test(a, b, hyp, rng),
                {"figure": figure, "basis": basis, "missing": missing},
            )
        found.append(per)
    # Holm per figure within each family of comparisons
    adjusted: dict[tuple[int, str], float | None] = {}
    families: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for i, (c, per) in enumerate(zip(judged, found, strict=True)):
        for figure, (r, _) in per.items():
            if not r.exact and r.p is not None:
                families.setdefault((c.family, figure), []).append((i, float(r.p)))
    for (_, figure), members in families.items():
        for (i, _), p in zip(members, stats.holm([p for _, p in members]), strict=True):
            adjusted[(i, figure)] = float(p)
    out: list[dict[str, CostVerdict]] = []
    spread = float(noise["spread"]) if noise and noise.get("spread") is not None else None
    for i, per in enumerate(found):
        verdicts: dict[str, CostVerdict] = {}
        for figure, (r, info) in per.items():
            time = COST_FIGURES[figure][1]
            p_adj = adjusted.get((i, figure))
            verdict, reason = stats.cost_verdict(
                r, p_adjusted=p_adj, alpha=hyp.alpha, time=time, noise=spread if time else None
            )
            verdicts[figure] = CostVerdict.from_dict(
                {
                    **info,
                    "unit": COST_FIGURES[figure][2],
                    **_ratio_fields(r),
                    "p_adjusted": p_adj,
                    "noise": spread if time else None,
                    "verdict": verdict,
                    "reason": reason,
                }
            )
        out.append(verdicts)
    return out


def _ratio_fields(r: Any) -> dict[str, Any]:
    d = r.to_dict()
    return {
        "n_pairs": d.get("n_pairs", 0),
        "ratio": d.get("ratio"),
        "interval": d.get("interval"),
        "interval_method": d.get("interval_method"),
        "t_interval": d.get("t_interval"),
        "p": d.get("p"),
        "p_t": d.get("p_t"),
        "exact": bool(d.get("exact")),
        "same": None
        if d.get("exact")
        else {
            "pvalue": d.get("tost_p"),
            "equivalent": bool(d.get("equivalent")),
            "margin": d.get("margin"),
            "bounds": d.get("equivalence_bounds"),
            "interval": d.get("tost_interval"),
        },
    }


def speed_verdict(c: Comparison, primary: str, hyp: Hypothesis) -> Comparison:
    """A speed trial's comparison: the verdict is about ``primary`` (a time); ``faster`` and
    ``same`` need the metric to be non-inferior within ``smallest_effect``."""
    margin = hyp.smallest_effect
    tost = c.tost
    lower = tost.interval[0] if tost is not None and tost.interval is not None else None
    guard = SpeedGuard(
        margin=margin,
        lower=lower,
        non_inferior=bool(lower is not None and margin is not None and lower > -margin),
        metric_verdict=c.verdict,
        metric_reason=c.reason,
    )
    cv = (c.costs or {}).get(primary)
    words = figure_words(primary)
    if c.verdict == "invalid":
        verdict, reason = "invalid", c.reason
    elif cv is None:
        verdict, reason = "inconclusive", f"{words} was measured on fewer than 2 seeds of both arms"
        if primary == "train_time":
            reason += ' (a recipe times its training with ctx.phase("train"))'
        else:
            reason += " (no seed of an arm reached the target, or none was timed)"
    elif c.verdict == "worse":
        verdict = "worse"
        reason = f"the metric is worse ({c.reason}), whatever {words}"
    elif cv.verdict == "slower":
        verdict, reason = "slower", cv.reason
    elif cv.verdict in ("faster", "same"):
        if guard.non_inferior:
            verdict = "faster" if cv.verdict != "same" else "same"
            reason = f"{cv.reason}; the metric is within -{margin:g} (lower bound {lower:+.4g})"
        else:
            verdict = "inconclusive"
            bound = "unknown" if lower is None else f"{lower:+.4g}"
            reason = (
                f"{cv.verdict} ({cv.reason}), but the metric is not shown within -{margin:g} "
                f"(lower bound {bound})"
            )
    else:
        verdict, reason = "inconclusive", cv.reason
    return c.replace(primary=primary, guard=guard, verdict=verdict, reason=reason)
