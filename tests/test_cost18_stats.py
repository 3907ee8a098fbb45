"""Paired cost ratios on the log scale: hand-computed cases, scipy, and simulations of the
verdicts' error rates. Every random number comes from a generator with a fixed seed."""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from fairtrial import stats as S

# five seeds' train times (s) of an arm and of the arm it is compared against
ARM = [12.0, 10.5, 11.8, 13.1, 9.9]
AGAINST = [10.0, 9.8, 10.9, 11.6, 9.7]


def test_five_pairs_by_hand() -> None:
    r = S.paired_log_ratio(ARM, AGAINST)
    d = [math.log(a / b) for a, b in zip(ARM, AGAINST, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    # the ratio is the geometric mean of the per-seed ratios
    geometric = math.prod(a / b for a, b in zip(ARM, AGAINST, strict=True)) ** (1 / n)
    assert r.ratio == pytest.approx(geometric, rel=1e-12)
    assert r.mean_log == pytest.approx(mean, rel=1e-12)
    assert r.sd_log == pytest.approx(sd, rel=1e-12)
    assert r.n_pairs == 5 and not r.exact
    # 5 pairs: the paired t interval on the logs, exponentiated
    t975 = sps.t.ppf(0.975, n - 1)
    assert r.interval_method == "paired t on the log ratios"
    assert r.interval == pytest.approx((math.exp(mean - t975 * se), math.exp(mean + t975 * se)))
    assert r.interval == r.t_interval
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert r.interval == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-10)
    assert r.p_t == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-10)
    # the sign-flip test by brute force over the 2^5 sign vectors (every ratio is above 1 here,
    # so only all-plus and all-minus are as extreme: p = 2/32)
    sums = [sum(s * x for s, x in zip(signs, d, strict=True)) for signs in _signs(n)]
    expected_p = sum(abs(t) >= abs(sum(d)) - 1e-12 for t in sums) / 2**n
    assert r.p == pytest.approx(expected_p) == pytest.approx(2 / 32)
    assert r.p_method == "exact sign-flip permutation of the log ratios"
    # TOST within ±log(1.05) on the log scale: the larger of two one-sided t p-values, and the
    # 90% interval
    bound = math.log(1.05)
    p_lower = sps.t.sf((mean + bound) / se, n - 1)
    p_upper = sps.t.cdf((mean - bound) / se, n - 1)
    assert r.tost_p == pytest.approx(max(p_lower, p_upper), rel=1e-10)
    assert r.tost_p == pytest.approx(
        max(
            sps.ttest_1samp(d, -bound, alternative="greater").pvalue,
            sps.ttest_1samp(d, bound, alternative="less").pvalue,
        ),
        rel=1e-10,
    )
    t95 = sps.t.ppf(0.95, n - 1)
    assert r.tost_interval == pytest.approx((math.exp(mean - t95 * se), math.exp(mean + t95 * se)))
    assert r.equivalence_bounds == pytest.approx((1 / 1.05, 1.05))
    assert r.equivalent is (r.tost_p < 0.05)
    # a 10% higher time: p = 0.0625 with five seeds cannot reach 0.05
    assert r.ratio == pytest.approx(1.0991, abs=1e-4)
    verdict, reason = S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=True)
    assert verdict == "inconclusive"
    assert reason == (
        "1.10× [1.02, 1.19]: p = 0.062 (Holm) ≥ 0.05 and not shown the same within 1/1.05 and 1.05"
    )
    assert json.loads(json.dumps(r.to_dict()))["interval"] == pytest.approx(list(r.interval))


def _signs(n: int) -> list[tuple[int, ...]]:
    return list(itertools.product((1, -1), repeat=n))


def test_swapping_the_arms_inverts_the_ratio() -> None:
    r = S.paired_log_ratio(ARM, AGAINST)
    s = S.paired_log_ratio(AGAINST, ARM)
    assert s.ratio == pytest.approx(1 / r.ratio)
    assert r.interval is not None and s.interval is not None
    assert s.interval == pytest.approx((1 / r.interval[1], 1 / r.interval[0]))
    assert (s.p, s.tost_p, s.equivalent) == (r.p, pytest.approx(r.tost_p), r.equivalent)


def test_an_exact_ratio_has_no_interval_and_no_test() -> None:
    flops = [3.1e12, 2.9e12, 3.3e12, 3.0e12, 3.2e12]
    r = S.paired_log_ratio([2.0 * f for f in flops], flops)
    assert r.exact and r.ratio == 2.0 and r.sd_log == 0.0
    assert (r.interval, r.t_interval, r.p, r.p_t, r.tost_p, r.tost_interval) == (None,) * 6
    assert not r.equivalent
    assert S.cost_verdict(r, p_adjusted=None, alpha=0.05, time=False) == (
        "costlier",
        "2.00× on every seed: the ratio is exact",
    )
    # the value alone decides, however small the difference and whatever the noise
    half = S.paired_log_ratio([0.999 * f for f in flops], flops)
    assert half.exact and half.equivalent
    assert S.cost_verdict(half, p_adjusted=None, alpha=0.05, time=False, noise=0.05)[0] == "cheaper"
    same = S.paired_log_ratio(flops, flops)
    assert same.exact and same.ratio == 1.0
    assert S.cost_verdict(same, p_adjusted=None, alpha=0.05, time=True)[0] == "same"
    assert json.loads(json.dumps(r.to_dict()))["p"] is None


def _identical_arms(
    gen: np.random.Generator, reps: int, n: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two identical arms: a per-seed factor both share (data order), times independent
    log-normal noise per trial."""
    seed_factor = np.exp(gen.normal(0.0, 0.2, size=(reps, n)))
    base = 100.0 * seed_factor
    return (
        base * np.exp(gen.normal(0.0, noise, size=(reps, n))),
        base * np.exp(gen.normal(0.0, noise, size=(reps, n))),
    )


@pytest.mark.parametrize(("n", "reps"), [(5, 400), (10, 800), (30, 800)])
def test_identical_arms_are_rarely_called_faster_or_slower(n: int, reps: int) -> None:
    """30 pairs: Monte Carlo permutation and the BCa interval (few resamples, to stay fast)."""
    gen = np.random.default_rng(18_000 + n)
    verdicts: dict[float, list[str]] = {}
    for noise in (0.02, 0.05):
        arm, against = _identical_arms(gen, reps // 2, n, noise)
        verdicts[noise] = []
        for a, b in zip(arm, against, strict=True):
            r = S.paired_log_ratio(a, b, n_resamples=400, rng=gen)
            verdicts[noise].append(S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=True)[0])
    every = verdicts[0.02] + verdicts[0.05]
    rate = sum(v in ("faster", "slower") for v in every) / len(every)
    assert rate <= 0.05 + 0.01, rate
    if n == 30:
        assert r.interval_method == "BCa bootstrap of the mean log ratio"
        assert r.p_method.startswith("Monte Carlo sign-flip permutation")
        # 2% noise per trial, 30 pairs: shown the same within the default 5% margin
        same = verdicts[0.02].count("same") / len(verdicts[0.02])
        assert same >= 0.9, same


def test_half_the_time_is_faster_and_the_t_interval_covers() -> None:
    """10 pairs, arm half the time with 5% noise per trial: the verdict is faster, the ratio near
    0.5, and the 95% t interval on the logs covers 0.5 in 95% ± 2% of 2000 repetitions."""
    gen = np.random.default_rng(1805)
    reps, n = 2000, 10
    against, other = _identical_arms(gen, reps, n, 0.05)
    arm = 0.5 * other
    covered = faster = 0
    ratios = []
    for a, b in zip(arm, against, strict=True):
        r = S.paired_log_ratio(a, b)
        assert r.interval is not None
        covered += r.interval[0] <= 0.5 <= r.interval[1]
        faster += S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=True)[0] == "faster"
        ratios.append(r.ratio)
    assert abs(covered / reps - 0.95) <= 0.02, covered / reps
    assert faster == reps
    assert np.median(ratios) == pytest.approx(0.5, rel=0.01)
    verdict, reason = S.cost_verdict(r, p_adjusted=0.002, alpha=0.05, time=True)
    assert verdict == "faster"
    assert reason.endswith(": p = 0.002 (Holm) < 0.05 and the interval lies below 1")
    assert reason.startswith(S.format_ratio(r.ratio, r.interval))


def test_the_bca_interval_from_20_pairs_on() -> None:
    gen = np.random.default_rng(1820)
    against = 50.0 * np.exp(gen.normal(0.0, 0.2, 25))
    arm = 0.8 * against * np.exp(gen.normal(0.0, 0.05, 25))
    r = S.paired_log_ratio(arm, against, rng=3)
    d = np.log(arm / against)
    assert r.interval_method == "BCa bootstrap of the mean log ratio"
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert r.t_interval == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-10)
    ref = sps.bootstrap((d,), np.mean, method="BCa", n_resamples=10_000, random_state=5)
    assert r.interval is not None
    low, high = math.log(r.interval[0]), math.log(r.interval[1])
    width = high - low
    ref_ci = ref.confidence_interval
    assert abs(low - ref_ci.low) < 0.05 * width and abs(high - ref_ci.high) < 0.05 * width
    # the same seed twice: the same interval; one pair fewer than bca_min_pairs: the t interval
    assert S.paired_log_ratio(arm, against, rng=3).interval == r.interval
    t_only = S.paired_log_ratio(arm, against, bca_min_pairs=26)
    assert t_only.interval == t_only.t_interval == r.t_interval
    assert S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=False)[0] == "cheaper"


def _two_percent_faster(diff: float = 0.02) -> S.CostRatio:
    """10 pairs, every seed (1 - diff) times the other up to 0.1%: as significant as 10 pairs
    can be (exact p = 2/1024)."""
    gen = np.random.default_rng(1830)
    against = 100.0 * np.exp(gen.normal(0.0, 0.2, 10))
    return S.paired_log_ratio((1.0 - diff) * against * np.exp(gen.normal(0.0, 0.001, 10)), against)


def test_a_difference_within_the_timing_noise_is_never_claimed() -> None:
    r = _two_percent_faster()
    assert r.p == pytest.approx(2 / 1024)
    assert r.interval is not None and r.interval[1] < 1.0
    assert S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=True)[0] == "faster"
    verdict, reason = S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=True, noise=0.03)
    assert verdict == "same"
    assert reason.startswith("0.98× [0.98, 0.98]: TOST shows the ratio within 1/1.05 and 1.05")
    assert reason.endswith(
        "; the 2% difference is within the 3% timing noise measured between repeated identical "
        "trials"
    )
    # a noise below the difference lets the claim stand
    assert S.cost_verdict(r, p_adjusted=r.p, alpha=0.05, time=True, noise=0.01)[0] == "faster"
    # outside the margin and within the noise: inconclusive, and the reason says why
    big = _two_percent_faster(0.06)
    verdict, reason = S.cost_verdict(big, p_adjusted=big.p, alpha=0.05, time=False, noise=0.08)
    assert verdict == "inconclusive"
    assert reason == (
        "0.94× [0.94, 0.94]: p = 0.002 (Holm) < 0.05, but the 6% difference is within the 8% "
        "measurement noise measured between repeated identical trials"
    )


def test_the_verdict_rule_in_order() -> None:
    slow = S.paired_log_ratio([2.0 * a for a in ARM], ARM[::-1])
    assert slow.interval is not None and slow.interval[0] > 1.0
    assert S.cost_verdict(slow, p_adjusted=0.01, alpha=0.05, time=True)[0] == "slower"
    assert S.cost_verdict(slow, p_adjusted=0.01, alpha=0.05, time=False)[0] == "costlier"
    # not significant after the adjustment, or no p at all: no claim
    assert S.cost_verdict(slow, p_adjusted=0.2, alpha=0.05, time=True)[0] == "inconclusive"
    verdict, reason = S.cost_verdict(slow, p_adjusted=None, alpha=0.05, time=True)
    assert verdict == "inconclusive" and "no p-value" in reason
    _, reason = S.cost_verdict(slow, p_adjusted=0.01, alpha=0.05, time=True, correction=None)
    assert ": p = 0.01 < 0.05 and the interval lies above 1" in reason
    # significant but the interval includes 1 (a permutation p with a wide t interval)
    wide = S.paired_log_ratio([1.5, 0.9, 1.4, 1.3, 0.95, 1.6], [1.0] * 6)
    assert wide.interval is not None and wide.interval[0] < 1.0 < wide.interval[1]
    verdict, reason = S.cost_verdict(wide, p_adjusted=0.01, alpha=0.05, time=True)
    assert verdict == "inconclusive" and reason.endswith("but the interval includes 1")


def test_timing_noise_pools_the_groups() -> None:
    groups = [[10.0, 11.0, 9.0], [2.0, 2.2], [5.0]]
    logs = [[math.log(x) for x in g] for g in groups[:2]]
    squares = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in logs)
    sd = math.sqrt(squares / 3)  # df = (3 - 1) + (2 - 1)
    noise = S.timing_noise(groups)
    assert noise is not None
    assert noise.sd_log == pytest.approx(sd, rel=1e-12)
    assert noise.spread == pytest.approx(math.exp(sd) - 1, rel=1e-12)
    assert (noise.n_groups, noise.n_values, noise.df) == (2, 5, 3)
    assert "pooled within-group sd of log time" in noise.method
    # a mapping's values are its groups; the scale of a group does not matter, only its spread
    keyed = S.timing_noise({"a": groups[0], "b": [x * 1000 for x in groups[1]]})
    assert keyed is not None and keyed.sd_log == pytest.approx(sd, rel=1e-12)
    assert S.timing_noise([[1.0], [2.0]]) is None
    assert S.timing_noise([]) is None
    assert json.loads(json.dumps(noise.to_dict()))["df"] == 3
    # measured noise feeds the verdict
    verdict, _ = S.cost_verdict(
        _two_percent_faster(), p_adjusted=0.002, alpha=0.05, time=True, noise=noise.spread
    )
    assert verdict == "same"


@pytest.mark.parametrize(
    ("ratio", "interval", "text"),
    [
        (1.2149, (1.151, 1.27), "1.21× [1.15, 1.27]"),
        (0.52, (0.5, 0.554), "0.52× [0.50, 0.55]"),
        (2.0, None, "2.00×"),
        (12.3, (10.6, 14.2), "12× [11, 14]"),
        (0.052, (0.0471, 0.058), "0.052× [0.047, 0.058]"),
        (0.2, (0.004, 0.9), "0.20× [0.0040, 0.90]"),
    ],
)
def test_format_ratio(ratio: float, interval: Any, text: str) -> None:
    assert S.format_ratio(ratio, interval) == text


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: S.paired_log_ratio([1.0, 0.0], [1.0, 1.0]), "arm"),
        (lambda: S.paired_log_ratio([1.0, 2.0], [1.0, -1.0]), "against"),
        (lambda: S.paired_log_ratio([1.0, math.nan], [1.0, 1.0]), "arm"),
        (lambda: S.paired_log_ratio([1.0, 2.0, 3.0], [1.0, 1.0]), "arm and against"),
        (lambda: S.paired_log_ratio([1.0], [1.0]), "arm and against"),
        (lambda: S.paired_log_ratio([[1.0, 2.0]], [[1.0, 2.0]]), "arm"),
        (lambda: S.paired_log_ratio(ARM, AGAINST, margin=0.0), "margin"),
        (lambda: S.paired_log_ratio(ARM, AGAINST, confidence=1.5), "confidence"),
        (lambda: S.paired_log_ratio(ARM, AGAINST, alpha=0.7), "alpha"),
        (lambda: S.paired_log_ratio(ARM, AGAINST, n_resamples=1), "n_resamples"),
        (lambda: S.paired_log_ratio(ARM, AGAINST, bca_min_pairs=2.5), "bca_min_pairs"),
        (lambda: S.paired_log_ratio(ARM, AGAINST, rng="x"), "rng"),
        (lambda: _verdict(alpha=0.5), "alpha"),
        (lambda: _verdict(noise=-0.1), "noise"),
        (lambda: _verdict(noise=math.inf), "noise"),
        (lambda: _verdict(p_adjusted=1.5), "p_adjusted"),
        (lambda: S.timing_noise([[1.0, 2.0], [1.0, 0.0]]), "groups[1]"),
        (lambda: S.timing_noise([[1.0, math.nan]]), "groups[0]"),
        (lambda: S.format_ratio(0.0, None), "ratio"),
    ],
)
def test_bad_input_names_the_parameter(call: Any, name: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(name) + " "):
        call()


def _verdict(**kwargs: Any) -> tuple[str, str]:
    r = S.paired_log_ratio(ARM, AGAINST)
    args: dict[str, Any] = {"p_adjusted": 0.01, "alpha": 0.05, "time": True} | kwargs
    return S.cost_verdict(r, **args)
