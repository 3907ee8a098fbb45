"""Sign-flip permutation test of paired differences: exact up to 20 pairs, Monte Carlo beyond.

References
----------
Fisher, R. A. (1935). *The Design of Experiments*, §21 (the randomization test on paired data).
Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. *Statistical
Applications in Genetics and Molecular Biology* 9(1), art. 39.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.stats._common import (
    FloatArray,
    Result,
    RngLike,
    as_rng,
    check_alternative,
    check_resamples,
    paired_differences,
)

DEFAULT_MC_RESAMPLES = 10_000
MAX_EXACT_N = 20
_BLOCK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class PermutationTest(Result):
    """Result of :func:`paired_permutation_test`.

    ``n_resamples`` is ``2**n`` for the exact test and the number of random sign vectors for the
    Monte Carlo one.
    """

    statistic: float  # mean of b - a
    pvalue: float
    exact: bool
    n_resamples: int
    alternative: str
    n: int


def _counts(
    sums: FloatArray, observed: float, tol: float
) -> tuple[int, int, int]:  # (>= obs, <= obs, |.| >= |obs|)
    ge = int(np.count_nonzero(sums >= observed - tol))
    le = int(np.count_nonzero(sums <= observed + tol))
    ext = int(np.count_nonzero(np.abs(sums) >= abs(observed) - tol))
    return ge, le, ext


def _exact_counts(d: FloatArray, observed: float, tol: float) -> tuple[int, int, int]:
    """Count over all 2**n sign vectors, as the outer sum of the sums of two halves' flips.

    Each sign vector's statistic is ``low[j] + high[i]`` where ``low`` enumerates the flips of
    the first half of the pairs and ``high`` those of the second half; the outer sum is formed
    in blocks of rows, so memory stays bounded while every one of the 2**n statistics is
    computed.
    """
    n = len(d)

    def all_sums(part: FloatArray) -> FloatArray:
        k = len(part)
        codes = np.arange(2**k, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(k)) & 1)
        return np.asarray(signs @ part, dtype=np.float64)

    half = n // 2
    low, high = all_sums(d[:half]), all_sums(d[half:])
    ge = le = ext = 0
    rows = max(1, _BLOCK_ELEMENTS // len(low))
    for start in range(0, len(high), rows):
        block = (high[start : start + rows, None] + low[None, :]).ravel()
        g, lo, e = _counts(block, observed, tol)
        ge, le, ext = ge + g, le + lo, ext + e
    return ge, le, ext


def _mc_counts(
    d: FloatArray, observed: float, tol: float, n_resamples: int, rng: np.random.Generator
) -> tuple[int, int, int]:
    n = len(d)
    total = float(d.sum())
    ge = le = ext = 0
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        m = min(rows, n_resamples - start)
        flips = rng.integers(0, 2, size=(m, n), dtype=np.int8).astype(np.float64)
        sums = total - 2.0 * (flips @ d)  # flipping the sign of pair i subtracts 2 d_i
        g, lo, e = _counts(sums, observed, tol)
        ge, le, ext = ge + g, le + lo, ext + e
    return ge, le, ext


def paired_permutation_test(
    a: Any,
    b: Any,
    *,
    alternative: str = "two-sided",
    n_resamples: int | None = None,
    rng: RngLike = None,
    max_exact_n: int = MAX_EXACT_N,
) -> PermutationTest:
    """Sign-flip permutation test of the mean paired difference ``mean(b - a)``.

    Under the null hypothesis the arms are exchangeable within each seed, so each difference
    ``b_i - a_i`` is as likely to have either sign (Fisher 1935). The p-value is the share of
    sign vectors whose mean is at least as extreme as the observed one:

    * up to ``max_exact_n`` (20) pairs, all ``2**n`` sign vectors are enumerated (exact test;
      vectorized and in bounded blocks); ``n_resamples`` is then ignored;
    * beyond, ``n_resamples`` random sign vectors (default 10,000) are drawn and the p-value is
      ``(1 + hits) / (1 + n_resamples)`` (Phipson & Smyth 2010), never 0.

    ``alternative``: ``"two-sided"`` (|mean| at least as large), ``"greater"`` (b > a) or
    ``"less"`` (b < a). Zero differences are allowed (flipping them changes nothing). Statistics
    equal to the observed one up to a relative 1e-9 count as ties (as extreme).
    ``rng``: a numpy Generator, an int seed, or ``None`` for a generator seeded with 0 (only the
    Monte Carlo test uses it; results are deterministic by default).
    """
    d = paired_differences(a, b)
    check_alternative(alternative)
    if n_resamples is not None:
        n_resamples = check_resamples(n_resamples)
    n = len(d)
    observed = float(d.sum())
    tol = 1e-9 * max(float(np.abs(d).sum()), 1e-300)
    if n <= max_exact_n:
        exact = True
        total = 2**n
        ge, le, ext = _exact_counts(d, observed, tol)
        hits = {"greater": ge, "less": le, "two-sided": ext}[alternative]
        pvalue = hits / total
    else:
        exact = False
        total = DEFAULT_MC_RESAMPLES if n_resamples is None else n_resamples
        ge, le, ext = _mc_counts(d, observed, tol, total, as_rng(rng))
        hits = {"greater": ge, "less": le, "two-sided": ext}[alternative]
        pvalue = (hits + 1) / (total + 1)
    return PermutationTest(
        statistic=observed / n,
        pvalue=min(1.0, pvalue),
        exact=exact,
        n_resamples=total,
        alternative=alternative,
        n=n,
    )
