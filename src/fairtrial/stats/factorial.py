"""Effects of a two-level factorial design, estimated on each seed and judged across seeds.

Every run of a design (:mod:`fairtrial.stats.designs`) is run on the same seeds, so each seed
is one complete replicate: :func:`estimate_effects` computes every effect on each seed, then
treats the per-seed effects like paired differences (a seed's own offset cancels in every
contrast): the paired t or BCa bootstrap interval, the sign-flip permutation test, Holm's
adjustment over the listed terms, TOST, and the project's verdict rule. The design API is
re-exported here, so ``fairtrial.stats.factorial`` holds the whole machinery.

References
----------
Box, G. E. P., Hunter, J. S. & Hunter, W. G. (2005). *Statistics for Experimenters*, 2nd ed.,
Wiley, ch. 5-6.
Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scand. J. Statist.*
6(2), 65-70.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.stats._common import (
    FloatArray,
    Result,
    RngLike,
    as_rng,
    check_alpha,
    check_confidence,
    check_resamples,
)
from fairtrial.stats.bootstrap import paired_bootstrap_ci
from fairtrial.stats.designs import (
    FRACTIONS,
    LETTERS,
    MAX_FULL_K,
    MAX_TABLED_K,
    AliasChain,
    Design,
    check_int,
    design_from_generators,
    effect_contrasts,
    estimable_terms,
    fractional_factorial,
    full_factorial,
    term_indexes,
    term_name,
    terms,
)
from fairtrial.stats.multiple import holm
from fairtrial.stats.permutation import paired_permutation_test
from fairtrial.stats.ttest import paired_t_test, tost_paired

__all__ = [
    "BCA_MIN_SEEDS",
    "FRACTIONS",
    "LETTERS",
    "MAX_FULL_K",
    "MAX_TABLED_K",
    "VERDICTS",
    "AliasChain",
    "Design",
    "FactorialAnalysis",
    "FactorialEffect",
    "PooledTerms",
    "design_from_generators",
    "effect_contrasts",
    "estimable_terms",
    "estimate_effects",
    "fractional_factorial",
    "full_factorial",
    "term_indexes",
    "term_name",
    "terms",
]

#: from this many complete seeds on, an effect's interval is the BCa bootstrap; below, paired t
BCA_MIN_SEEDS = 20
VERDICTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass(frozen=True)
class FactorialEffect(Result):
    """One term's effect, estimated on each complete seed, signed so that positive is better.

    ``low``/``high`` is the interval used for the verdict (``interval_method``), the paired t
    interval (``t_low``/``t_high``) and BCa bootstrap (``bca_low``/``bca_high``, NaN below
    ``bca_min_seeds`` seeds) alongside; ``p`` is the sign-flip permutation test of the per-seed
    effects against 0, ``p_t`` the t-test's, ``p_adjusted`` Holm's over every listed term.
    """

    term: str
    order: int
    aliases: tuple[str, ...]
    estimate: float
    sd: float
    se: float
    low: float
    high: float
    interval_method: str
    t_low: float
    t_high: float
    bca_low: float
    bca_high: float
    p: float
    p_method: str
    p_t: float
    p_adjusted: float
    tost_equivalent: bool | None
    tost_p: float | None
    verdict: str
    reason: str
    n: int


@dataclass(frozen=True)
class PooledTerms(Result):
    """The estimable terms of order above ``above_order``, summarised rather than listed: their
    number, the RMS of their effects, the largest by absolute value, and the RMS of their
    standard errors (effects near it are noise)."""

    above_order: int
    n_terms: int
    rms: float
    rms_se: float
    largest_term: str | None
    largest: float


@dataclass(frozen=True)
class FactorialAnalysis(Result):
    """Result of :func:`estimate_effects`. Means are in the metric's own units (not signed):
    ``cell_means[j]`` is run j's mean over the complete seeds, ``main_means[i]`` factor i's
    (off, on) means, ``pair_means["AB"][a][b]`` the mean with A at a and B at b (0 off, 1 on).
    """

    design: Design
    n_seeds: int
    dropped_seeds: int
    dropped_rows: tuple[int, ...]
    max_order: int
    sign: float
    confidence: float
    alpha: float
    smallest_effect: float | None
    effects: tuple[FactorialEffect, ...]
    pooled: PooledTerms
    cell_means: tuple[float, ...]
    main_means: tuple[tuple[float, float], ...]
    pair_means: dict[str, tuple[tuple[float, float], tuple[float, float]]]

    def effect(self, term: str) -> FactorialEffect:
        """The listed effect of ``term`` or of the chain it is aliased in."""
        for e in self.effects:
            if term == e.term or term in e.aliases:
                return e
        raise ValueError(
            f"term {term!r} is not among the listed effects (terms up to order "
            f"{self.max_order}, one per alias chain)"
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["design"] = self.design.to_dict()
        out["effects"] = [e.to_dict() for e in self.effects]
        out["pooled"] = self.pooled.to_dict()
        out["pair_means"] = {t: [list(r) for r in m] for t, m in self.pair_means.items()}
        return out


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _verdict(
    e: FactorialEffect, p_adj: float, alpha: float, margin: float | None
) -> tuple[str, str]:
    """The project's verdict rule and its one-line reason (worded as the analysis words them)."""
    if p_adj < alpha and (e.low > 0 or e.high < 0) and e.estimate != 0:
        return (
            "better" if e.estimate > 0 else "worse",
            f"adjusted p = {_fmt_p(p_adj)} < {alpha} and the interval excludes 0",
        )
    if e.tost_equivalent and e.tost_p is not None:
        return "equivalent", f"TOST: the effect lies within ±{margin:g} (p = {_fmt_p(e.tost_p)})"
    if p_adj < alpha:
        return "inconclusive", f"the test rejects but the {e.interval_method} interval includes 0"
    return "inconclusive", f"adjusted p = {_fmt_p(p_adj)} ≥ {alpha}" + (
        f" and not shown equivalent within ±{margin:g}"
        if margin is not None
        else " (no smallest_effect to test equivalence against)"
    )


def _means(design: Design, data: FloatArray) -> tuple[Any, Any, Any]:
    """Cell means, each factor's (off, on) means and each pair's 2 × 2 means."""
    cells = data.mean(axis=0)
    x = design.matrix()

    def at(mask: Any) -> float:
        return float(cells[mask].mean())

    main = tuple((at(x[:, i] < 0), at(x[:, i] > 0)) for i in range(design.k))
    pairs = {
        term_name((i, j)): tuple(
            tuple(at((x[:, i] == a) & (x[:, j] == b)) for b in (-1.0, 1.0)) for a in (-1.0, 1.0)
        )
        for i, j in itertools.combinations(range(design.k), 2)
    }
    return tuple(float(c) for c in cells), main, pairs


def estimate_effects(
    design: Design,
    y: Any,
    *,
    max_order: int = 2,
    confidence: float = 0.95,
    smallest_effect: float | None = None,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    rng: RngLike = None,
    sign: float = 1.0,
    bca_min_seeds: int = BCA_MIN_SEEDS,
) -> FactorialAnalysis:
    """Every effect of a factorial design, estimated on each seed and judged across seeds.

    Parameters
    ----------
    design : the design whose runs are ``y``'s columns.
    y : seeds × runs: ``y[i, j]`` is run j of the design on seed i. A row with any NaN (a
        failed trial) is dropped and counted; at least 2 complete rows are needed.
    max_order : terms up to this order are estimated and judged one by one; the estimable
        terms above it are summarised in ``pooled``.
    confidence : of the intervals.
    smallest_effect : with it, TOST tests each effect for equivalence within ±smallest_effect
        (in the metric's units).
    alpha : of the verdicts (Holm-adjusted p) and of TOST.
    n_resamples : of the BCa bootstrap and of the Monte Carlo permutation test (beyond 20
        seeds; up to 20 the permutation test is exact).
    rng : a numpy Generator, an int seed or None (seeded with 0: deterministic by default).
    sign : +1 when higher is better, -1 when lower is better; effects are multiplied by it, so
        a positive effect always means better.
    bca_min_seeds : from this many complete seeds on, the verdict uses the BCa bootstrap
        interval; below, the paired t interval (bootstrap intervals are too narrow with few
        seeds).

    For each seed i and term, ``e_i`` = mean of the runs where the term's column is +1 minus
    the mean where it is -1 (:func:`effect_contrasts`); a seed's offset cancels in every
    contrast. Per term: the estimate (mean of ``e_i``), the interval, the sign-flip
    permutation p, the t-test's p alongside, Holm's adjustment over every listed term, TOST,
    the alias chain, and the verdict: ``better`` (``worse``) when the adjusted p < alpha, the
    interval excludes 0 and the estimate is positive (negative); ``equivalent`` when TOST shows
    it within ±smallest_effect; else ``inconclusive``.

    Up to 20 seeds the permutation test is exact, so its smallest p is 2 / 2^n: Holm's first
    step over m terms can reject only when 2 m / 2^n < alpha (at alpha 0.05: 8 seeds for the
    6 terms of a 2^3 design, 10 for the 13 of a 2^(6-2), 11 for the 36 of a 2^8).
    """
    if not isinstance(design, Design):
        raise ValueError(
            "design must be a Design (from full_factorial or fractional_factorial), got "
            f"{type(design).__name__}"
        )
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must be a seeds × runs array of numbers: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != design.n_runs:
        raise ValueError(
            f"y must be seeds × runs with one column per run of the design ({design.n_runs}), "
            f"got shape {arr.shape}"
        )
    if np.any(np.isinf(arr)):
        seed, run = (int(v) for v in np.argwhere(np.isinf(arr))[0])
        raise ValueError(
            f"y holds an infinite value (seed row {seed}, run {run}); NaN marks a failed trial"
        )
    max_order = check_int(max_order, "max_order", 1)
    confidence = check_confidence(confidence)
    alpha = check_alpha(alpha)
    n_resamples = check_resamples(n_resamples, minimum=2)
    bca_min_seeds = check_int(bca_min_seeds, "bca_min_seeds", 2)
    if sign not in (1.0, -1.0) or isinstance(sign, bool):
        raise ValueError(f"sign must be 1 (higher is better) or -1 (lower is better), got {sign!r}")
    margin = None
    if smallest_effect is not None:
        margin = float(smallest_effect)
        if not (math.isfinite(margin) and margin > 0.0):
            raise ValueError(f"smallest_effect must be a positive number, got {smallest_effect!r}")
    complete = ~np.isnan(arr).any(axis=1)
    dropped = tuple(int(i) for i in np.flatnonzero(~complete))
    data = arr[complete]
    n = len(data)
    if n < 2:
        raise ValueError(
            f"y needs at least 2 seeds with every run finished (no NaN), got {n} of {len(arr)}"
        )
    gen = as_rng(rng)
    estimable = estimable_terms(design)
    listed = [t for t in estimable if len(t) <= max_order]
    higher = [t for t in estimable if len(t) > max_order]
    e_all = float(sign) * effect_contrasts(design, data, estimable)
    zeros = np.zeros(n)
    use_bca = n >= bca_min_seeds
    effects = []
    for t, d in zip(listed, e_all.T[: len(listed)], strict=True):
        tt = paired_t_test(zeros, d, confidence=confidence)
        bca = (math.nan, math.nan)
        if use_bca:
            ci = paired_bootstrap_ci(
                zeros, d, confidence=confidence, n_resamples=n_resamples, rng=gen
            )
            bca = (ci.low, ci.high)
        perm = paired_permutation_test(zeros, d, n_resamples=n_resamples, rng=gen)
        tost = None if margin is None else tost_paired(zeros, d, margin=margin, alpha=alpha)
        low, high = bca if use_bca else (tt.low, tt.high)
        effects.append(
            FactorialEffect(
                term=t,
                order=len(t),
                aliases=design.aliases(t),
                estimate=tt.effect,
                sd=float(d.std(ddof=1)),
                se=tt.se,
                low=low,
                high=high,
                interval_method="BCa bootstrap" if use_bca else "paired t",
                t_low=tt.low,
                t_high=tt.high,
                bca_low=bca[0],
                bca_high=bca[1],
                p=perm.pvalue,
                p_method="exact sign-flip permutation"
                if perm.exact
                else f"Monte Carlo sign-flip permutation ({perm.n_resamples} resamples)",
                p_t=tt.pvalue,
                p_adjusted=math.nan,  # Holm's, once every term's p is known
                tost_equivalent=None if tost is None else bool(tost.equivalent),
                tost_p=None if tost is None else float(tost.pvalue),
                verdict="inconclusive",
                reason="",
                n=n,
            )
        )
    adjusted = holm([e.p for e in effects]) if effects else np.empty(0)
    for i, (e, p) in enumerate(zip(effects, adjusted, strict=True)):
        verdict, reason = _verdict(e, float(p), alpha, margin)
        effects[i] = dataclasses.replace(e, p_adjusted=float(p), verdict=verdict, reason=reason)
    rest = e_all[:, len(listed) :]
    est = rest.mean(axis=0)
    big = int(np.argmax(np.abs(est))) if len(higher) else -1
    pooled = PooledTerms(
        above_order=max_order,
        n_terms=len(higher),
        rms=float(np.sqrt(np.mean(est**2))) if len(higher) else math.nan,
        rms_se=float(np.sqrt(np.mean(rest.var(axis=0, ddof=1) / n))) if len(higher) else math.nan,
        largest_term=higher[big] if len(higher) else None,
        largest=float(est[big]) if len(higher) else math.nan,
    )
    cells, main, pairs = _means(design, data)
    return FactorialAnalysis(
        design=design,
        n_seeds=n,
        dropped_seeds=len(dropped),
        dropped_rows=dropped,
        max_order=max_order,
        sign=float(sign),
        confidence=confidence,
        alpha=alpha,
        smallest_effect=margin,
        effects=tuple(effects),
        pooled=pooled,
        cell_means=cells,
        main_means=main,
        pair_means=pairs,
    )
