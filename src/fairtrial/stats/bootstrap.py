"""Bootstrap confidence interval of the mean paired difference (BCa or percentile).

References
----------
Efron, B. (1987). Better bootstrap confidence intervals. *JASA* 82(397), 171-185.
Efron, B. & Tibshirani, R. (1993). *An Introduction to the Bootstrap*, ch. 13-14.
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
    check_confidence,
    check_resamples,
    paired_differences,
)

METHODS = ("BCa", "percentile")

# Bootstrap index matrices are drawn in blocks of at most this many elements, so memory stays
# bounded (about 8 bytes each) whatever the number of seeds and resamples.
_BLOCK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class BootstrapCI(Result):
    """A bootstrap interval of the mean paired difference ``mean(b - a)``.

    ``low``/``high`` are the bootstrap bounds; ``t_low``/``t_high`` the paired t-interval at the
    same confidence, reported alongside as a cross-check.
    """

    effect: float
    low: float
    high: float
    t_low: float
    t_high: float
    confidence: float
    method: str
    n_resamples: int
    n: int
    z0: float  # BCa bias correction (0.0 for the percentile method)
    acceleration: float  # BCa acceleration (0.0 for the percentile method)


def bootstrap_means(x: FloatArray, n_resamples: int, rng: np.random.Generator) -> FloatArray:
    """Means of ``n_resamples`` resamples (with replacement) of ``x``, drawn in bounded blocks."""
    n = len(x)
    values, first, freq = np.unique(x, return_index=True, return_counts=True)
    if 4 * len(values) <= n:
        # Categories in order of first appearance, so that -x draws the mirror image of x.
        order = np.argsort(first)
        values, freq = values[order], freq[order]
        # Few distinct values (e.g. wins/ties/losses): a resample is fully described by how
        # often it draws each value, a multinomial draw - the same distribution, O(B) not O(B n).
        counts = rng.multinomial(n, freq / n, size=n_resamples)
        return np.asarray(counts @ values / n, dtype=np.float64)
    out = np.empty(n_resamples)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def bca_levels(
    theta_hat: float, theta_star: FloatArray, jackknife: FloatArray, confidence: float
) -> tuple[float, float, float, float]:
    """The two percentile levels of the BCa interval, with ``z0`` and the acceleration.

    ``z0`` = Φ⁻¹ of the share of bootstrap statistics below the estimate, counting ties as one
    half (so a bootstrap distribution that is a point mass gives ``z0 = 0``); the share is kept
    inside ``[1/(2B), 1 - 1/(2B)]`` so that ``z0`` stays finite. The acceleration is the skewness
    of the jackknife values (Efron 1987, eq. 6.6); it is 0 when they are all equal.
    """
    from scipy.special import ndtri

    b = len(theta_star)
    below = np.count_nonzero(theta_star < theta_hat)
    ties = np.count_nonzero(theta_star == theta_hat)
    share = float(below + 0.5 * ties) / b
    share = min(max(share, 0.5 / b), 1.0 - 0.5 / b)
    z0 = float(ndtri(share))
    dev = jackknife.mean() - jackknife
    denom = float(np.sum(dev**2)) ** 1.5
    accel = float(np.sum(dev**3)) / (6.0 * denom) if denom > 0.0 else 0.0
    tail = (1.0 - confidence) / 2.0
    levels = []
    for z_alpha in (float(ndtri(tail)), float(ndtri(1.0 - tail))):
        w = z0 + z_alpha
        shrink = 1.0 - accel * w
        # A huge |acceleration| can push the denominator through 0; the level then saturates.
        level = _norm_cdf(z0 + w / shrink) if shrink > 0.0 else (1.0 if w > 0 else 0.0)
        levels.append(level)
    return levels[0], levels[1], z0, accel


def t_interval(d: FloatArray, confidence: float) -> tuple[float, float]:
    """Two-sided Student t-interval of the mean of ``d`` (collapses to the mean if sd = 0)."""
    from scipy.stats import t as t_dist

    n = len(d)
    mean = float(d.mean())
    half = float(t_dist.ppf(0.5 + confidence / 2.0, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def paired_bootstrap_ci(
    a: Any,
    b: Any,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    method: str = "BCa",
    rng: RngLike = None,
) -> BootstrapCI:
    """Bootstrap confidence interval of the mean paired difference ``mean(b - a)``.

    Parameters
    ----------
    a, b : 1-D array-likes of equal length (pair i = seed i), at least 2 pairs, no NaN.
        ``b`` is the treated arm, ``a`` the baseline; a positive effect means ``b`` is larger.
    confidence : two-sided confidence level of the interval.
    n_resamples : number of bootstrap resamples of the seeds (resampled with replacement).
    method : ``"BCa"`` (bias-corrected and accelerated, Efron 1987: bias correction ``z0`` from
        the bootstrap distribution, acceleration from the jackknife) or ``"percentile"``.
    rng : a numpy Generator, an int seed, or ``None`` for a generator seeded with 0, so that
        the result is deterministic unless you pass a generator.

    Returns
    -------
    BootstrapCI with the effect, the bootstrap bounds, and the paired t-interval alongside.

    When every difference is equal, every resample has the same mean and the interval collapses
    to the effect (no NaN, no warning). Ties between bootstrap means and the estimate count as
    one half when ``z0`` is computed. Bounds are linear-interpolation quantiles of the bootstrap
    distribution.

    References: Efron (1987), Better bootstrap confidence intervals, JASA 82:171-185;
    Efron & Tibshirani (1993), An Introduction to the Bootstrap, §14.3.
    """
    d = paired_differences(a, b)
    confidence = check_confidence(confidence)
    n_resamples = check_resamples(n_resamples, minimum=2)
    if method not in METHODS:
        raise ValueError(f"method must be 'BCa' or 'percentile', got {method!r}")
    gen = as_rng(rng)
    n = len(d)
    effect = float(d.mean())
    theta_star = bootstrap_means(d, n_resamples, gen)
    if method == "BCa":
        jackknife = (d.sum() - d) / (n - 1)
        lo_level, hi_level, z0, accel = bca_levels(effect, theta_star, jackknife, confidence)
    else:
        tail = (1.0 - confidence) / 2.0
        lo_level, hi_level, z0, accel = tail, 1.0 - tail, 0.0, 0.0
    low, high = (float(q) for q in np.quantile(theta_star, [lo_level, hi_level]))
    if np.ptp(d) == 0.0:
        # Every resample mean is the effect up to rounding: report it exactly.
        low = high = effect
    t_low, t_high = t_interval(d, confidence)
    return BootstrapCI(
        effect=effect,
        low=low,
        high=high,
        t_low=t_low,
        t_high=t_high,
        confidence=confidence,
        method=method,
        n_resamples=n_resamples,
        n=n,
        z0=z0,
        acceleration=accel,
    )
