"""Paired and Welch t-tests, and the paired TOST equivalence test.

References
----------
Student (1908). The probable error of a mean. *Biometrika* 6(1), 1-25.
Welch, B. L. (1947). The generalization of "Student's" problem when several different population
variances are involved. *Biometrika* 34(1/2), 28-35; Satterthwaite, F. E. (1946). An approximate
distribution of estimates of variance components. *Biometrics Bulletin* 2(6), 110-114.
Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power
approach for assessing the equivalence of average bioavailability. *J. Pharmacokinetics and
Biopharmaceutics* 15(6), 657-680.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fairtrial.stats._common import (
    Result,
    as_sample,
    check_alpha,
    check_alternative,
    check_confidence,
    paired_differences,
)


@dataclass(frozen=True)
class TTest(Result):
    """Result of :func:`paired_t_test` and :func:`welch_t_test`.

    ``effect`` is ``mean(b - a)`` (paired) or ``mean(b) - mean(a)`` (Welch); ``low``/``high``
    its confidence interval, one-sided (an infinite bound) for a one-sided alternative, as in
    ``scipy.stats.ttest_rel(...).confidence_interval()``.
    """

    statistic: float
    df: float
    pvalue: float
    effect: float
    low: float
    high: float
    se: float
    confidence: float
    alternative: str
    test: str  # "paired" | "welch"


@dataclass(frozen=True)
class TOST(Result):
    """Result of :func:`tost_paired`: equivalent iff ``pvalue < alpha``, i.e. iff the (1-2α)
    interval ``[low, high]`` lies strictly inside ``(-margin, margin)``."""

    pvalue: float  # max of the two one-sided p-values
    equivalent: bool
    low: float
    high: float
    effect: float
    margin: float
    alpha: float
    p_lower: float  # H0: effect <= -margin
    p_upper: float  # H0: effect >= +margin
    df: float
    se: float


def _t_result(
    effect: float, se: float, df: float, alternative: str, confidence: float, test: str
) -> TTest:
    from scipy.stats import t as t_dist

    if se > 0.0:
        stat = effect / se
        if alternative == "two-sided":
            p = 2.0 * float(t_dist.sf(abs(stat), df))
        elif alternative == "greater":
            p = float(t_dist.sf(stat, df))
        else:
            p = float(t_dist.cdf(stat, df))
    else:
        # No spread at all: the data determine the effect exactly. A zero effect is no evidence
        # of anything (t = 0, p = 1); a nonzero one is certain in its direction (t = ±inf).
        stat = 0.0 if effect == 0.0 else math.copysign(math.inf, effect)
        if effect == 0.0:
            p = 1.0
        elif alternative == "two-sided":
            p = 0.0
        else:
            p = 0.0 if (effect > 0) == (alternative == "greater") else 1.0
    if alternative == "two-sided":
        half = float(t_dist.ppf(0.5 + confidence / 2.0, df)) * se
        low, high = effect - half, effect + half
    elif alternative == "greater":
        low, high = effect - float(t_dist.ppf(confidence, df)) * se, math.inf
    else:
        low, high = -math.inf, effect + float(t_dist.ppf(confidence, df)) * se
    return TTest(
        statistic=stat,
        df=df,
        pvalue=min(1.0, p),
        effect=effect,
        low=low,
        high=high,
        se=se,
        confidence=confidence,
        alternative=alternative,
        test=test,
    )


def paired_t_test(
    a: Any, b: Any, *, alternative: str = "two-sided", confidence: float = 0.95
) -> TTest:
    """Paired Student t-test of ``mean(b - a) = 0`` (Student 1908), with its confidence interval.

    ``df = n - 1``, ``se = sd(b - a, ddof=1) / sqrt(n)``. Agrees with
    ``scipy.stats.ttest_rel(b, a, alternative=...)``. ``alternative="greater"`` means b > a.

    Zero variance of the differences (every seed moved by the same amount): a zero effect gives
    ``statistic = 0, pvalue = 1``; a nonzero effect gives ``statistic = ±inf`` and ``pvalue = 0``
    (1 for the one-sided alternative pointing the other way); the interval collapses to the
    effect. scipy returns NaN there instead.
    """
    d = paired_differences(a, b)
    check_alternative(alternative)
    confidence = check_confidence(confidence)
    n = len(d)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    return _t_result(float(d.mean()), se, float(n - 1), alternative, confidence, "paired")


def welch_t_test(
    a: Any, b: Any, *, alternative: str = "two-sided", confidence: float = 0.95
) -> TTest:
    """Welch's unpaired t-test of ``mean(b) - mean(a) = 0`` (Welch 1947), for unequal variances.

    ``se = sqrt(var_a/n_a + var_b/n_b)`` and Welch-Satterthwaite degrees of freedom
    ``se**4 / ((var_a/n_a)**2/(n_a-1) + (var_b/n_b)**2/(n_b-1))``. Agrees with
    ``scipy.stats.ttest_ind(b, a, equal_var=False)``. Each sample needs at least 2 values; the
    lengths may differ. When both samples have zero variance the rule of
    :func:`paired_t_test` applies (and ``df = n_a + n_b - 2``).
    """
    xa = as_sample(a, "a")
    xb = as_sample(b, "b")
    check_alternative(alternative)
    confidence = check_confidence(confidence)
    va, vb = float(xa.var(ddof=1)) / len(xa), float(xb.var(ddof=1)) / len(xb)
    se = math.sqrt(va + vb)
    if se > 0.0:
        df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    else:
        df = float(len(xa) + len(xb) - 2)
    effect = float(xb.mean() - xa.mean())
    return _t_result(effect, se, df, alternative, confidence, "welch")


def tost_paired(a: Any, b: Any, *, margin: float, alpha: float = 0.05) -> TOST:
    """Two one-sided paired t-tests for equivalence within ``±margin`` (Schuirmann 1987).

    Tests H0: ``mean(b - a) <= -margin`` (``p_lower``) and H0: ``mean(b - a) >= margin``
    (``p_upper``), each at level ``alpha``; ``pvalue`` is the larger one and ``equivalent`` is
    ``pvalue < alpha``, the same as the (1 - 2·alpha) t-interval ``[low, high]`` lying inside
    ``(-margin, margin)``. ``margin`` must be positive (in the metric's units).

    Zero variance of the differences: equivalent (p = 0) iff ``|effect| < margin``, else p = 1.
    """
    from scipy.stats import t as t_dist

    d = paired_differences(a, b)
    alpha = check_alpha(alpha)
    margin = float(margin)
    if not (math.isfinite(margin) and margin > 0.0):
        raise ValueError(f"margin must be a positive number (the equivalence bound), got {margin}")
    n = len(d)
    df = float(n - 1)
    effect = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se > 0.0:
        p_lower = float(t_dist.sf((effect + margin) / se, df))
        p_upper = float(t_dist.cdf((effect - margin) / se, df))
        half = float(t_dist.ppf(1.0 - alpha, df)) * se
    else:
        p_lower = 0.0 if effect > -margin else 1.0
        p_upper = 0.0 if effect < margin else 1.0
        half = 0.0
    pvalue = max(p_lower, p_upper)
    return TOST(
        pvalue=pvalue,
        equivalent=bool(pvalue < alpha),
        low=effect - half,
        high=effect + half,
        effect=effect,
        margin=margin,
        alpha=alpha,
        p_lower=p_lower,
        p_upper=p_upper,
        df=df,
        se=se,
    )


def cohens_dz(a: Any, b: Any) -> float:
    """Cohen's d_z: ``mean(b - a) / sd(b - a)`` with ``ddof=1`` (Cohen 1988, §2.3.5).

    When every difference is the same (sd = 0), d_z is ``+inf``/``-inf`` for a nonzero mean and
    ``nan`` for a zero mean (no effect and no spread: undefined).
    """
    d = paired_differences(a, b)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return math.nan if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd
