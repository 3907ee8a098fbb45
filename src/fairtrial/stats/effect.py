"""Effect sizes beyond the mean: probability of improvement and Almost Stochastic Order.

References
----------
Agarwal, R., Schwarzer, M., Castro, P. S., Courville, A. & Bellemare, M. G. (2021). Deep
reinforcement learning at the edge of the statistical precipice. *NeurIPS 2021* (probability of
improvement, stratified bootstrap; the ``rliable`` library).
Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
stochastically larger than the other. *Ann. Math. Statist.* 18(1), 50-60.
del Barrio, E., Cuesta-Albertos, J. A. & Matrán, C. (2018). An optimal transportation approach
for assessing almost stochastic order. In *The Mathematics of the Uncertain*, 33-44.
Dror, R., Shlomov, S. & Reichart, R. (2019). Deep dominance - how to properly compare deep neural
models. *ACL 2019*, 2773-2785.
Ulmer, D., Hardmeier, C. & Frellsen, J. (2022). deep-significance: easy and meaningful
significance testing in the age of neural networks. arXiv:2204.06815.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.stats._common import (
    FloatArray,
    Result,
    RngLike,
    as_rng,
    as_sample,
    check_confidence,
    check_resamples,
    paired_differences,
)

_BLOCK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class ProbabilityOfImprovement(Result):
    """P(b > a) + ½·P(b = a) with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    paired: bool
    confidence: float
    n_resamples: int
    method: str  # "percentile"


@dataclass(frozen=True)
class ASO(Result):
    """Result of :func:`aso`: ``b`` almost stochastically dominates ``a`` iff
    ``epsilon_min < tau``."""

    epsilon_min: float  # upper confidence bound of the violation ratio
    violation_ratio: float  # the plug-in estimate from the two samples
    dominant: bool
    tau: float
    confidence: float
    n_resamples: int


def _resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> FloatArray:
    """(n_resamples, n) multiplicities of each observation in resamples with replacement."""
    counts = np.empty((n_resamples, n))
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        flat = (idx + n * np.arange(stop - start)[:, None]).ravel()
        counts[start:stop] = np.bincount(flat, minlength=(stop - start) * n).reshape(-1, n)
    return counts


def probability_of_improvement(
    a: Any,
    b: Any,
    *,
    paired: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    rng: RngLike = None,
) -> ProbabilityOfImprovement:
    """Probability that ``b`` beats ``a``, ties counting one half, with a bootstrap interval.

    * ``paired=True`` (seeds shared by both arms): the share of seeds where b wins,
      ``mean_i([b_i > a_i] + 0.5 [b_i = a_i])``, with a percentile bootstrap over seeds.
    * ``paired=False``: the Mann-Whitney statistic ``P(X_b > X_a) + 0.5 P(X_b = X_a)`` over all
      ``n_a × n_b`` pairs (Mann & Whitney 1947; the "probability of improvement" of Agarwal et
      al. 2021), with a stratified percentile bootstrap: each arm's runs are resampled on their
      own, as rliable does.

    ``rng``: a numpy Generator, an int seed, or ``None`` for a generator seeded with 0
    (deterministic by default).
    """
    confidence = check_confidence(confidence)
    n_resamples = check_resamples(n_resamples, minimum=2)
    gen = as_rng(rng)
    if paired:
        d = paired_differences(a, b)
        wins = (d > 0).astype(np.float64) + 0.5 * (d == 0)
        estimate = float(wins.mean())
        from fairtrial.stats.bootstrap import bootstrap_means

        stars = bootstrap_means(wins, n_resamples, gen)
    else:
        xa, xb = as_sample(a, "a"), as_sample(b, "b")
        wins_m = (xb[None, :] > xa[:, None]).astype(np.float64) + 0.5 * (xb[None, :] == xa[:, None])
        estimate = float(wins_m.mean())
        ca = _resample_counts(len(xa), n_resamples, gen)
        cb = _resample_counts(len(xb), n_resamples, gen)
        # The statistic of a resample is the count-weighted mean of the win matrix.
        stars = np.einsum("ri,ri->r", ca @ wins_m, cb) / (len(xa) * len(xb))
    tail = (1.0 - confidence) / 2.0
    low, high = (float(q) for q in np.quantile(stars, [tail, 1.0 - tail]))
    return ProbabilityOfImprovement(
        estimate=estimate,
        low=low,
        high=high,
        paired=bool(paired),
        confidence=confidence,
        n_resamples=n_resamples,
        method="percentile",
    )


def _segments(n_a: int, n_b: int) -> tuple[FloatArray, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Pieces of (0, 1) on which both empirical quantile functions are constant.

    The empirical quantile function of n sorted values is ``x_(ceil(n t))`` for t in (0, 1], a
    step function with steps at multiples of 1/n; between consecutive points of the union of
    both grids both are constant, so integrals over t are exact sums over these pieces.
    """
    edges = np.union1d(np.arange(n_a + 1) / n_a, np.arange(n_b + 1) / n_b)
    widths = np.diff(edges)
    keep = widths > 1e-15
    mids = ((edges[:-1] + edges[1:]) / 2)[keep]
    ia = np.minimum(np.floor(mids * n_a).astype(np.int64), n_a - 1)
    ib = np.minimum(np.floor(mids * n_b).astype(np.int64), n_b - 1)
    return widths[keep], ia, ib


def _violation_ratios(
    qa: FloatArray, qb: FloatArray, widths: FloatArray
) -> FloatArray:  # rows: samples
    diff = qb - qa
    total = (diff**2) @ widths
    violated = (np.where(qb < qa, diff, 0.0) ** 2) @ widths
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = violated / total
    # Identical quantile functions: neither dominates; the ratio is taken as 1/2 (as in
    # deep-significance).
    return np.asarray(np.where(total > 0.0, ratio, 0.5), dtype=np.float64)


def aso(
    a: Any,
    b: Any,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    tau: float = 0.5,
    rng: RngLike = None,
) -> ASO:
    """Almost Stochastic Order: how far ``b`` is from stochastically dominating ``a``.

    For unpaired score samples (any lengths >= 2). With empirical quantile functions ``F_a⁻¹``
    and ``F_b⁻¹``, the violation ratio of "b dominates a" is

        ε_W2 = ∫_{F_b⁻¹(t) < F_a⁻¹(t)} (F_b⁻¹(t) - F_a⁻¹(t))² dt / ∫ (F_b⁻¹(t) - F_a⁻¹(t))² dt

    (del Barrio et al. 2018; Dror et al. 2019): 0 when every quantile of b is at least a's, 1 when
    a dominates b. ``epsilon_min`` is its upper confidence bound at ``confidence``,
    ``ε̂ + Φ⁻¹(confidence)·σ̂_B`` clipped to [0, 1], where σ̂_B is the standard deviation of the
    violation ratio over ``n_resamples`` bootstrap resamples of both samples (Dror et al. 2019,
    Ulmer et al. 2022 / deep-significance ``aso(scores_b, scores_a)``). ``dominant`` is
    ``epsilon_min < tau``; the usual threshold is ``tau = 0.5`` (Ulmer et al. 2022 recommend
    smaller, e.g. 0.2, for a stricter reading).

    The integrals are computed exactly on the pieces where both step quantile functions are
    constant (deep-significance uses a grid of step 0.005 instead). Identical samples give a
    ratio of 0.5. ``rng``: Generator, int seed or ``None`` (seeded with 0; deterministic).
    """
    from scipy.special import ndtri

    xa, xb = as_sample(a, "a"), as_sample(b, "b")
    confidence = check_confidence(confidence)
    n_resamples = check_resamples(n_resamples, minimum=2)
    tau = float(tau)
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1] (usually 0.5 or 0.2), got {tau}")
    gen = as_rng(rng)
    na, nb = len(xa), len(xb)
    widths, ia, ib = _segments(na, nb)
    sa, sb = np.sort(xa), np.sort(xb)
    ratio = float(_violation_ratios(sa[ia][None, :], sb[ib][None, :], widths)[0])
    stars = np.empty(n_resamples)
    block = max(1, _BLOCK_ELEMENTS // max(na, nb, len(widths)))
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        ra = np.sort(xa[gen.integers(0, na, size=(stop - start, na))], axis=1)
        rb = np.sort(xb[gen.integers(0, nb, size=(stop - start, nb))], axis=1)
        stars[start:stop] = _violation_ratios(ra[:, ia], rb[:, ib], widths)
    sigma = float(stars.std())
    eps = min(1.0, max(0.0, ratio + float(ndtri(confidence)) * sigma))
    if not math.isfinite(eps):
        eps = 1.0
    return ASO(
        epsilon_min=eps,
        violation_ratio=ratio,
        dominant=bool(eps < tau),
        tau=tau,
        confidence=confidence,
        n_resamples=n_resamples,
    )
