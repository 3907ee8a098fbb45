"""Paired cost ratios on the log scale: is an arm faster, slower, cheaper, costlier, the same?

A cost figure (train time, wall time, FLOPs, peak memory, energy...) is compared as the ratio
``arm / against``, paired by seed. Costs are positive and their noise is multiplicative (a slow
disk slows every step by a share, not by a fixed number of seconds), so the statistics work on
``d_i = log(arm_i / against_i)``: the ratio is ``exp(mean d)``, the geometric mean of the
per-seed ratios, and every interval is the exponential of an interval of ``mean d``. "The same"
is equivalence on the log scale, within ``1/(1 + margin) .. 1 + margin``, as bioequivalence
trials judge the ratio of two formulations.

References
----------
Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power
approach for assessing the equivalence of average bioavailability. *J. Pharmacokinetics and
Biopharmaceutics* 15(6), 657-680.
U.S. Food and Drug Administration (2001). *Guidance for Industry: Statistical Approaches to
Establishing Bioequivalence* (the ratio of geometric means, tested on log-transformed data).
Kalibera, T. & Jones, R. (2013). Rigorous benchmarking in reasonable time. *ISMM 2013*, 63-74
(ratios of execution times, and the noise between repeated identical runs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.stats._common import (
    FloatArray,
    Result,
    RngLike,
    as_rng,
    as_sample,
    check_alpha,
    check_confidence,
    check_resamples,
)
from fairtrial.stats.bootstrap import paired_bootstrap_ci
from fairtrial.stats.permutation import paired_permutation_test
from fairtrial.stats.ttest import paired_t_test, tost_paired

#: per-seed ratios that agree to this relative tolerance make the ratio exact (a count, not a
#: measurement: FLOPs, parameters)
EXACT_TOLERANCE = 1e-12
#: an exact ratio this close to 1 is "same"
EXACT_SAME = 1e-9
#: from this many pairs on, the ratio's interval is the BCa bootstrap; below, the paired t
BCA_MIN_PAIRS = 20
#: the verdict words: (lower, higher) cost of the arm, for time figures and for the others
TIME_WORDS = ("faster", "slower")
COST_WORDS = ("cheaper", "costlier")
VERDICTS = ("faster", "slower", "cheaper", "costlier", "same", "inconclusive")


@dataclass(frozen=True)
class CostRatio(Result):
    """Result of :func:`paired_log_ratio`: the ratio ``arm / against`` paired by seed.

    ``ratio`` is ``exp(mean_log)``, the geometric mean of the per-seed ratios; intervals are on
    the ratio scale. With ``exact`` (every seed gave the same ratio) there is no interval and no
    test: ``interval``, ``t_interval``, ``p``, ``p_t``, ``tost_p`` and ``tost_interval`` are
    ``None`` and ``equivalent`` says whether the ratio itself lies strictly inside
    ``equivalence_bounds``.
    """

    n_pairs: int
    ratio: float
    mean_log: float  # mean of log(arm_i / against_i)
    sd_log: float  # sd (ddof=1) of log(arm_i / against_i)
    interval: tuple[float, float] | None
    interval_method: str
    t_interval: tuple[float, float] | None
    confidence: float
    p: float | None  # two-sided sign-flip permutation test of the log ratios
    p_method: str
    p_t: float | None  # paired t-test of the log ratios
    margin: float
    equivalence_bounds: tuple[float, float]  # 1/(1 + margin), 1 + margin
    tost_p: float | None
    tost_interval: tuple[float, float] | None  # the (1 - 2 alpha) interval of the ratio
    equivalent: bool
    alpha: float
    exact: bool
    n_resamples: int


@dataclass(frozen=True)
class TimingNoise(Result):
    """Result of :func:`timing_noise`: how much repeated identical trials' times spread.

    ``spread`` is ``exp(sd_log) - 1``, a relative spread (0.03: a trial typically takes 3%
    more or less than the same trial run again).
    """

    spread: float
    sd_log: float
    n_groups: int  # groups with at least 2 values (the others say nothing about spread)
    n_values: int  # values in those groups
    df: int  # n_values - n_groups
    method: str


def _positive(x: Any, name: str) -> FloatArray:
    arr = as_sample(x, name, min_n=0)
    if np.any(arr <= 0.0):
        bad = int(np.flatnonzero(arr <= 0.0)[0])
        raise ValueError(
            f"{name} must hold positive costs (a ratio needs both sides > 0): "
            f"index {bad} is {arr[bad]:g}"
        )
    return arr


def _pairs(arm: Any, against: Any) -> tuple[FloatArray, FloatArray]:
    """``arm`` and ``against`` checked: positive, finite, paired, 2 pairs at least."""
    xa = _positive(arm, "arm")
    xb = _positive(against, "against")
    if len(xa) != len(xb):
        raise ValueError(
            f"arm and against need the same length (pair i = seed i): "
            f"arm has {len(xa)} values, against has {len(xb)}"
        )
    if len(xa) < 2:
        raise ValueError(f"arm and against need at least 2 pairs, got {len(xa)}")
    return xa, xb


def _exp(iv: tuple[float, float]) -> tuple[float, float]:
    return math.exp(iv[0]), math.exp(iv[1])


def paired_log_ratio(
    arm: Any,
    against: Any,
    *,
    confidence: float = 0.95,
    margin: float = 0.05,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    rng: RngLike = None,
    bca_min_pairs: int = BCA_MIN_PAIRS,
) -> CostRatio:
    """The ratio ``arm / against`` of a cost paired by seed, its interval, test and TOST.

    Parameters
    ----------
    arm, against : 1-D array-likes of positive costs of equal length (pair i = seed i), at
        least 2 pairs, no NaN.
    confidence : two-sided confidence level of ``interval`` and ``t_interval``.
    margin : the relative difference that counts as the same: equivalence is tested within
        ``1/(1 + margin) .. 1 + margin`` (``±log(1 + margin)`` on the log scale, symmetric, so
        an arm and its opponent swapped get the same verdict).
    alpha : level of the TOST; its interval is the (1 - 2·alpha) one.
    n_resamples : bootstrap resamples, and Monte Carlo sign vectors past 20 pairs.
    rng : a numpy Generator, an int seed, or ``None`` for a generator seeded with 0.
    bca_min_pairs : from this many pairs on the interval is the BCa bootstrap of the mean log
        ratio (Efron 1987); below, the paired t interval, as bootstrap intervals are too narrow
        with few seeds. The t interval is reported alongside either way.

    The test is the two-sided sign-flip permutation test of the log ratios (exact up to 20
    pairs, Monte Carlo beyond: :func:`~fairtrial.stats.paired_permutation_test`), with the
    paired t-test (``p_t``) alongside; TOST is :func:`~fairtrial.stats.tost_paired` on the logs.

    When every seed gives the same ratio (to a relative 1e-12: a count such as FLOPs) the
    ratio is ``exact``: its value is that ratio, and there is no interval and no test.
    """
    x_arm, x_against = _pairs(arm, against)
    log_arm, log_against = np.log(x_arm), np.log(x_against)
    confidence = check_confidence(confidence)
    alpha = check_alpha(alpha)
    n_resamples = check_resamples(n_resamples, minimum=2)
    margin_f = float(margin)
    if not (math.isfinite(margin_f) and margin_f > 0.0):
        raise ValueError(
            f"margin must be a positive relative difference (0.05 for 5%), got {margin!r}"
        )
    if isinstance(bca_min_pairs, bool) or not isinstance(bca_min_pairs, (int, np.integer)):
        raise ValueError(f"bca_min_pairs must be an int (e.g. 20), got {bca_min_pairs!r}")
    gen = as_rng(rng)
    d = log_arm - log_against
    n = len(d)
    log_margin = math.log1p(margin_f)
    bounds = (1.0 / (1.0 + margin_f), 1.0 + margin_f)
    mean = float(d.mean())
    common: dict[str, Any] = {
        "n_pairs": n,
        "mean_log": mean,
        "confidence": confidence,
        "margin": margin_f,
        "equivalence_bounds": bounds,
        "alpha": alpha,
        "n_resamples": n_resamples,
    }
    if float(np.ptp(d)) <= EXACT_TOLERANCE * max(1.0, float(np.abs(d).max())):
        # the quotient itself, not exp(log(.)), so 2.0 per seed is 2.0, not 2.0000000000000004
        exact = float(np.median(x_arm / x_against))
        none = "none: every seed gave the same ratio (exact)"
        return CostRatio(
            ratio=exact,
            sd_log=0.0,
            interval=None,
            interval_method=none,
            t_interval=None,
            p=None,
            p_method=none,
            p_t=None,
            tost_p=None,
            tost_interval=None,
            equivalent=bool(abs(mean) < log_margin),
            exact=True,
            **common,
        )
    tt = paired_t_test(log_against, log_arm, confidence=confidence)
    t_iv = (tt.low, tt.high)
    if n >= bca_min_pairs:
        ci = paired_bootstrap_ci(
            log_against, log_arm, confidence=confidence, n_resamples=n_resamples, rng=gen
        )
        interval, method = (ci.low, ci.high), "BCa bootstrap of the mean log ratio"
    else:
        interval, method = t_iv, "paired t on the log ratios"
    perm = paired_permutation_test(log_against, log_arm, n_resamples=n_resamples, rng=gen)
    tost = tost_paired(log_against, log_arm, margin=log_margin, alpha=alpha)
    return CostRatio(
        ratio=math.exp(mean),
        sd_log=float(d.std(ddof=1)),
        interval=_exp(interval),
        interval_method=method,
        t_interval=_exp(t_iv),
        p=perm.pvalue,
        p_method="exact sign-flip permutation of the log ratios"
        if perm.exact
        else f"Monte Carlo sign-flip permutation of the log ratios ({perm.n_resamples} resamples)",
        p_t=tt.pvalue,
        tost_p=tost.pvalue,
        tost_interval=_exp((tost.low, tost.high)),
        equivalent=tost.equivalent,
        exact=False,
        **common,
    )


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _pct(x: float) -> str:
    """A relative difference as a percentage, two significant digits (12%, 2%, 0.4%)."""
    x *= 100.0
    return f"{x:.0f}%" if x >= 10 else f"{x:.2g}%"


def _decimals(x: float) -> int:
    if x >= 10.0:
        return 0
    if x >= 0.1:
        return 2
    return 1 - math.floor(math.log10(x))  # two significant digits


def format_ratio(ratio: float, interval: tuple[float, float] | None = None) -> str:
    """``"1.21× [1.15, 1.27]"``: a ratio and its interval, as the summaries write ratios.

    Two decimals between 0.1 and 10 (cost ratios near 1 need them), none from 10 on ("12×",
    as compute summaries write large ratios), two significant digits below 0.1 ("0.052×").
    The bounds take the ratio's decimals, or more when a bound below 0.1 would lose its digits.
    """

    def one(x: float, decimals: int) -> str:
        if not math.isfinite(x):
            return "∞" if x > 0 else "—"
        if 0.0 < x < 0.1:
            decimals = max(decimals, _decimals(x))
        return f"{x:.{decimals}f}"

    r = float(ratio)
    if not (math.isfinite(r) and r > 0.0):
        raise ValueError(f"ratio must be a positive number, got {ratio!r}")
    dec = _decimals(r)
    text = f"{one(r, dec)}×"
    if interval is not None:
        low, high = (float(v) for v in interval)
        text += f" [{one(low, dec)}, {one(high, dec)}]"
    return text


def cost_verdict(
    r: CostRatio,
    *,
    p_adjusted: float | None,
    alpha: float,
    time: bool,
    noise: float | None = None,
    correction: str | None = "Holm",
) -> tuple[str, str]:
    """The verdict on a cost ratio and its one-line reason.

    The first rule that holds decides:

    1. ``exact``: faster/cheaper when the ratio is below ``1 - 1e-9``, slower/costlier above
       ``1 + 1e-9``, else same: the value alone decides, there is no noise to test against;
    2. faster/cheaper when ``p_adjusted < alpha`` and the interval lies below 1 (slower/costlier
       above 1), unless ``noise`` (a relative spread, e.g. 0.03, as :func:`timing_noise` gives
       it) is given and ``|ratio - 1| <= noise``: a difference within the noise measured between
       repeated identical trials is never claimed;
    3. same when TOST shows the ratio within ``1/(1 + margin) .. 1 + margin``;
    4. inconclusive.

    ``time``: the words are faster/slower (a time figure) rather than cheaper/costlier.
    ``correction`` names the adjustment of ``p_adjusted`` in the reason (``None``: unadjusted).
    """
    alpha = check_alpha(alpha)
    if p_adjusted is not None:
        p_adj = float(p_adjusted)
        if not 0.0 <= p_adj <= 1.0:
            raise ValueError(f"p_adjusted must be a p-value in [0, 1] or None, got {p_adjusted!r}")
    if noise is not None:
        noise_f = float(noise)
        if not (math.isfinite(noise_f) and noise_f >= 0.0):
            raise ValueError(
                f"noise must be a relative spread >= 0 (0.03 for 3%) or None, got {noise!r}"
            )
    lower, higher = TIME_WORDS if time else COST_WORDS
    if r.exact:
        if r.ratio < 1.0 - EXACT_SAME:
            word = lower
        elif r.ratio > 1.0 + EXACT_SAME:
            word = higher
        else:
            return "same", f"{format_ratio(r.ratio)} on every seed: the ratio is exact and 1"
        return word, f"{format_ratio(r.ratio)} on every seed: the ratio is exact"
    head = format_ratio(r.ratio, r.interval)
    tag = f" ({correction})" if correction else ""
    iv = r.interval
    below = iv is not None and iv[1] < 1.0
    above = iv is not None and iv[0] > 1.0
    significant = p_adjusted is not None and float(p_adjusted) < alpha
    test = f"p = {_fmt_p(float(p_adjusted))}{tag}" if p_adjusted is not None else ""
    within_noise = ""
    if significant and (below or above):
        diff = abs(r.ratio - 1.0)
        if noise is None or diff > float(noise):
            side = "below" if below else "above"
            word = lower if below else higher
            return word, f"{head}: {test} < {alpha:g} and the interval lies {side} 1"
        kind = "timing" if time else "measurement"
        within_noise = (
            f"the {_pct(diff)} difference is within the {_pct(float(noise))} {kind} noise "
            "measured between repeated identical trials"
        )
    hi = r.equivalence_bounds[1]
    if r.equivalent:
        reason = (
            f"{head}: TOST shows the ratio within 1/{hi:g} and {hi:g} "
            f"(p = {_fmt_p(r.tost_p or 0.0)})"
        )
        return "same", reason + (f"; {within_noise}" if within_noise else "")
    if within_noise:
        return "inconclusive", f"{head}: {test} < {alpha:g}, but {within_noise}"
    not_same = f"not shown the same within 1/{hi:g} and {hi:g}"
    if significant:
        return "inconclusive", f"{head}: {test} < {alpha:g} but the interval includes 1"
    if p_adjusted is None:
        return "inconclusive", f"{head}: no p-value, and {not_same}"
    return "inconclusive", f"{head}: {test} ≥ {alpha:g} and {not_same}"


def timing_noise(groups: Iterable[Any] | Mapping[Any, Any]) -> TimingNoise | None:
    """The spread of repeated identical trials' times: the pooled within-group sd of log time.

    ``groups``: sequences (or a mapping's values) of positive times, each group the same
    computation run several times (every seed of a deterministic recipe, or trials repeated
    with the same identity). A group with at least 2 values contributes its log times'
    squared deviations from its own mean and ``n - 1`` degrees of freedom; the pooled sd is
    ``sqrt(sum of squares / sum of df)``, returned as the relative spread
    ``exp(sd) - 1``. Groups of one value are skipped; ``None`` when no group has 2 values.
    """
    items = list(groups.values()) if isinstance(groups, Mapping) else list(groups)
    squares = 0.0
    df = n_groups = n_values = 0
    for i, group in enumerate(items):
        x = _positive(group, f"groups[{i}]")
        if len(x) < 2:
            continue
        logs = np.log(x)
        squares += float(np.sum((logs - logs.mean()) ** 2))
        df += len(x) - 1
        n_groups += 1
        n_values += len(x)
    if df == 0:
        return None
    sd = math.sqrt(squares / df)
    return TimingNoise(
        spread=math.expm1(sd),
        sd_log=sd,
        n_groups=n_groups,
        n_values=n_values,
        df=df,
        method=f"pooled within-group sd of log time, {n_groups} group(s) of repeated identical "
        f"trials, {df} df",
    )
