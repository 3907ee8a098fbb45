"""Exact power of the paired t-test, the seeds it needs, and the effect it can detect.

The power is computed from the noncentral t distribution: with ``d = effect / sd_diff`` and
``n`` pairs, the t statistic has ``n - 1`` degrees of freedom and noncentrality ``d·sqrt(n)``.
The two-sided power includes both rejection tails. This matches G*Power's "means: difference
from constant (matched pairs)" and R's ``power.t.test(type = "paired", strict = TRUE)``.

References
----------
Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed., ch. 2.
Faul, F., Erdfelder, E., Lang, A.-G. & Buchner, A. (2007). G*Power 3. *Behavior Research
Methods* 39(2), 175-191.
"""

from __future__ import annotations

import math

from fairtrial.stats._common import check_alpha, check_alternative


def _check_sd(sd_diff: float) -> float:
    sd = float(sd_diff)
    if not (math.isfinite(sd) and sd > 0.0):
        raise ValueError(
            f"sd_diff must be a positive number (the sd of the paired differences), got {sd_diff}"
        )
    return sd


def _check_power(power: float) -> float:
    p = float(power)
    if not 0.0 < p < 1.0:
        raise ValueError(f"power must be strictly between 0 and 1 (e.g. 0.8), got {power}")
    return p


def _power(d: float, n: int, alpha: float, alternative: str) -> float:
    from scipy.stats import nct
    from scipy.stats import t as t_dist

    df = n - 1
    ncp = d * math.sqrt(n)
    if alternative == "two-sided":
        crit = float(t_dist.ppf(1.0 - alpha / 2.0, df))
        return float(nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp))
    crit = float(t_dist.ppf(1.0 - alpha, df))
    if alternative == "greater":
        return float(nct.sf(crit, df, ncp))
    return float(nct.cdf(-crit, df, ncp))


def paired_t_power(
    effect: float,
    sd_diff: float,
    n: int,
    *,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> float:
    """Exact power of the paired t-test with ``n`` pairs for a true mean difference ``effect``.

    ``effect`` is signed (``b - a``): under ``"greater"`` a negative effect has power below
    alpha. ``sd_diff`` is the standard deviation of the paired differences (> 0), ``n >= 2``.
    """
    sd = _check_sd(sd_diff)
    alpha = check_alpha(alpha)
    check_alternative(alternative)
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"n must be an integer number of pairs >= 2, got {n!r}")
    effect = float(effect)
    if not math.isfinite(effect):
        raise ValueError(f"effect must be a finite number, got {effect}")
    return _power(effect / sd, int(n), alpha, alternative)


def _magnitude(smallest_effect: float) -> float:
    e = float(smallest_effect)
    if not (math.isfinite(e) and e > 0.0):
        raise ValueError(
            f"the effect must be a positive magnitude (its direction comes from alternative), "
            f"got {smallest_effect}"
        )
    return e


def _signed(d: float, alternative: str) -> float:
    return -d if alternative == "less" else d


def required_seeds(
    sd_diff: float,
    smallest_effect: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
    max_n: int = 100_000,
) -> int:
    """The smallest number of seeds ``n >= 2`` whose paired t-test reaches ``power``.

    ``smallest_effect`` is a positive magnitude; under ``alternative="less"`` the effect is
    taken as ``-smallest_effect``. Power rises with n, so n is found by doubling then bisection
    on the exact power. Raises ``ValueError`` if even ``max_n`` seeds do not suffice.
    Examples (d = effect/sd, alpha 0.05 two-sided, power 0.8): d = 0.5 → 34, d = 0.8 → 15,
    d = 1.0 → 10, as in G*Power and ``power.t.test(type="paired")``.
    """
    sd = _check_sd(sd_diff)
    d = _signed(_magnitude(smallest_effect) / sd, alternative)
    alpha = check_alpha(alpha)
    target = _check_power(power)
    check_alternative(alternative)
    if int(max_n) != max_n or max_n < 2:
        raise ValueError(f"max_n must be an integer >= 2, got {max_n!r}")
    max_n = int(max_n)

    def enough(n: int) -> bool:
        return _power(d, n, alpha, alternative) >= target

    if enough(2):
        return 2
    lo, hi = 2, 4  # invariant: not enough(lo)
    while not enough(min(hi, max_n)):
        if hi >= max_n:
            raise ValueError(
                f"even max_n={max_n} seeds give less than power {target} for an effect of "
                f"{smallest_effect} with sd_diff {sd}; raise max_n or the smallest effect"
            )
        lo, hi = hi, hi * 2
    hi = min(hi, max_n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


def minimum_detectable_effect(
    sd_diff: float,
    n: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """The smallest effect magnitude the paired t-test with ``n`` pairs detects with ``power``.

    Solves ``paired_t_power(e, sd_diff, n) = power`` for ``e > 0`` (``-e`` under ``"less"``) by
    Brent's root finding on the exact power; returns the positive magnitude, in the units of
    ``sd_diff``.
    """
    from scipy.optimize import brentq

    sd = _check_sd(sd_diff)
    alpha = check_alpha(alpha)
    target = _check_power(power)
    check_alternative(alternative)
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"n must be an integer number of pairs >= 2, got {n!r}")
    n = int(n)
    if target <= (alpha / 2.0 if alternative == "two-sided" else alpha):
        raise ValueError(f"power must exceed the test's size ({alpha}), got {target}")

    def gap(d: float) -> float:
        return _power(_signed(d, alternative), n, alpha, alternative) - target

    hi = 1.0
    while gap(hi) < 0.0:
        hi *= 2.0
    d = float(brentq(gap, 0.0, hi, xtol=1e-12, rtol=1e-12))
    return d * sd
