"""fairtrial.stats against published numbers, hand-computed cases, scipy, and simulation.

Every random number comes from a generator with a fixed seed, so the file is deterministic.
Cross-checks against statsmodels, deep-significance and rliable skip when those are missing.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from fairtrial import stats as S

# Student's sleep data (Cushny & Peebles 1905), R's `sleep`: extra hours of sleep per patient
# under drug 1 and drug 2.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def _optional(module: str) -> Any:
    """Import an optional cross-check library, or skip (also when it is installed but broken,
    e.g. rliable's dependency arch with an incompatible pandas)."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:
        pytest.skip(f"{module} not usable: {exc}")


def _json(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    return d


# --------------------------------------------------------------------------- input checking


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: S.paired_bootstrap_ci(a, b),
        lambda a, b: S.paired_permutation_test(a, b),
        lambda a, b: S.paired_t_test(a, b),
        lambda a, b: S.tost_paired(a, b, margin=1.0),
        lambda a, b: S.probability_of_improvement(a, b),
        lambda a, b: S.cohens_dz(a, b),
    ],
)
def test_paired_functions_reject_bad_input(call: Any) -> None:
    with pytest.raises(ValueError, match="same length"):
        call([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        call([1.0], [2.0])
    with pytest.raises(ValueError, match="NaN"):
        call([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        call([[1.0, 2.0]], [[1.0, 2.0]])


def test_settings_are_checked() -> None:
    a, b = [1.0, 2.0, 3.0], [2.0, 2.5, 4.0]
    with pytest.raises(ValueError, match="confidence"):
        S.paired_bootstrap_ci(a, b, confidence=95)
    with pytest.raises(ValueError, match="method"):
        S.paired_bootstrap_ci(a, b, method="bca")
    with pytest.raises(ValueError, match="alternative"):
        S.paired_t_test(a, b, alternative="larger")
    with pytest.raises(ValueError, match="rng"):
        S.paired_bootstrap_ci(a, b, rng="seed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        S.tost_paired(a, b, margin=0.0)
    with pytest.raises(ValueError, match="pvalues"):
        S.holm([0.1, 1.5])


def test_default_rng_is_deterministic_and_settable() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(0.3, 1.0, size=30)
    assert S.paired_bootstrap_ci(a, b) == S.paired_bootstrap_ci(a, b, rng=0)
    assert S.paired_bootstrap_ci(a, b, rng=1) != S.paired_bootstrap_ci(a, b, rng=0)
    assert S.paired_permutation_test(a, b) == S.paired_permutation_test(a, b)
    assert S.aso(a, b) == S.aso(a, b, rng=np.random.default_rng(0))


def test_results_are_frozen_and_json_ready() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=12), rng.normal(0.5, 1.0, size=12)
    results = [
        S.paired_bootstrap_ci(a, b, n_resamples=500),
        S.paired_permutation_test(a, b),
        S.paired_t_test(a, b, alternative="greater"),  # one-sided: high = inf → None
        S.welch_t_test(a, b),
        S.tost_paired(a, b, margin=0.5),
        S.probability_of_improvement(a, b, n_resamples=500),
        S.aso(a, b, n_resamples=200),
        S.aggregate_difference({"a": a, "b": b}, "a", "b", n_resamples=200),
    ]
    for r in results:
        d = _json(r)
        with pytest.raises(AttributeError):
            r.low = 0.0  # type: ignore[misc, union-attr]
        assert all(isinstance(v, (int, float, str, bool, type(None))) for v in d.values())
    assert _json(results[2])["high"] is None
    assert _json(results[0])["method"] == "BCa"
    assert _json(results[0])["n_resamples"] == 500


# --------------------------------------------------------------------------- bootstrap


def test_bca_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=25)
    b = a + rng.gamma(2.0, 0.5, size=25)  # skewed differences: BCa moves the interval
    ours = S.paired_bootstrap_ci(a, b, n_resamples=20_000, rng=1)
    ref = sps.bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(y - x, axis=axis),
        paired=True,
        vectorized=True,
        method="BCa",
        n_resamples=20_000,
        random_state=np.random.default_rng(2),
    ).confidence_interval
    width = ref.high - ref.low
    assert ours.low == pytest.approx(ref.low, abs=0.03 * width)
    assert ours.high == pytest.approx(ref.high, abs=0.03 * width)
    assert ours.effect == pytest.approx(np.mean(b - a))
    pct = S.paired_bootstrap_ci(a, b, n_resamples=20_000, rng=1, method="percentile")
    # Right-skewed differences: BCa shifts the interval to the right of the percentile one.
    assert ours.acceleration > 0 and ours.high > pct.high
    t = sps.ttest_rel(b, a).confidence_interval(0.95)
    assert (ours.t_low, ours.t_high) == pytest.approx((t.low, t.high))


def test_bootstrap_degenerate_cases_give_no_nan_and_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = S.paired_bootstrap_ci([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
        assert same.low == same.high == same.effect == 0.5
        assert same.t_low == same.t_high == 0.5
        zero = S.paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0])
        assert (zero.effect, zero.low, zero.high) == (0.0, 0.0, 0.0)
        # Heavy ties in the bootstrap distribution (n = 3, one nonzero difference).
        ties = S.paired_bootstrap_ci([0.0, 0.0, 0.0], [0.0, 0.0, 3.0], n_resamples=2000)
        assert math.isfinite(ties.low) and math.isfinite(ties.high)
        assert 0.0 <= ties.low <= ties.effect <= ties.high <= 3.0


def _coverage(draw: Any, n: int, mu: float, experiments: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    bca = t = 0
    zeros = np.zeros(n)
    for _ in range(experiments):
        r = S.paired_bootstrap_ci(zeros, draw(rng, n), n_resamples=2000, rng=rng)
        bca += r.low <= mu <= r.high
        t += r.t_low <= mu <= r.t_high
    return bca / experiments, t / experiments


@pytest.mark.parametrize(
    ("name", "draw", "mu"),
    [
        ("normal", lambda rng, n: rng.normal(0.5, 1.0, n), 0.5),
        ("gamma(4), skewed", lambda rng, n: rng.gamma(4.0, 1.0, n), 4.0),
    ],
)
def test_bca_and_t_intervals_cover_95_percent(name: str, draw: Any, mu: float) -> None:
    bca, t = _coverage(draw, 50, mu, 1500, seed=2024)
    assert 0.93 <= bca <= 0.97, (name, bca)
    assert 0.93 <= t <= 0.97, (name, t)


def test_t_interval_covers_at_ten_seeds_where_bca_falls_short() -> None:
    # Known small-sample behaviour of bootstrap intervals (Efron & Tibshirani 1993, §14.3):
    # they use the plug-in sd and normal quantiles, so with 10 normal pairs BCa covers about
    # 90%; the t-interval reported beside it is exact.
    bca, t = _coverage(lambda rng, n: rng.normal(0.5, 1.0, n), 10, 0.5, 1500, seed=7)
    assert 0.93 <= t <= 0.97
    assert bca < t


# --------------------------------------------------------------------------- permutation


def test_exact_permutation_hand_computed() -> None:
    r = S.paired_permutation_test([0, 0, 0], [1, 2, 3])
    assert r.exact and r.n_resamples == 8 and r.statistic == 2.0
    assert r.pvalue == 2 / 8
    assert S.paired_permutation_test([0, 0, 0], [1, 2, 3], alternative="greater").pvalue == 1 / 8
    assert S.paired_permutation_test([0, 0, 0], [1, 2, 3], alternative="less").pvalue == 1.0
    # d = (1, -2, 3): the 8 signed sums are 6, 4, 2, 0, 0, -2, -4, -6 and the observed one is 2.
    d = np.array([1.0, -2.0, 3.0])
    z = np.zeros(3)
    assert S.paired_permutation_test(z, d).pvalue == 6 / 8
    assert S.paired_permutation_test(z, d, alternative="greater").pvalue == 3 / 8
    assert S.paired_permutation_test(z, d, alternative="less").pvalue == 6 / 8
    # Zero differences do not change anything: d = (0, 0, 1, 2) has the sums ±1 ±2, each four
    # times; two of the four are at least |3|.
    assert S.paired_permutation_test([1, 2, 3], [1, 2, 3]).pvalue == 1.0
    assert S.paired_permutation_test(np.zeros(4), [0, 0, 1, 2]).pvalue == 8 / 16


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_permutation_matches_scipy(alternative: str) -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=14)
    b = a + rng.normal(0.4, 1.0, size=14)
    ours = S.paired_permutation_test(a, b, alternative=alternative)
    ref = sps.permutation_test(
        (b - a,),
        np.mean,
        permutation_type="samples",
        n_resamples=np.inf,
        alternative=alternative,
    )
    assert ours.exact and ours.n_resamples == 2**14
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-12)


def test_monte_carlo_permutation_close_to_exact_and_never_zero() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(size=20)
    b = a + rng.normal(0.5, 1.0, size=20)
    exact = S.paired_permutation_test(a, b)
    mc = S.paired_permutation_test(a, b, max_exact_n=0, n_resamples=20_000)
    assert exact.exact and not mc.exact and mc.n_resamples == 20_000
    assert mc.pvalue == pytest.approx(exact.pvalue, abs=0.01)
    big = S.paired_permutation_test(np.zeros(40), np.ones(40) + np.arange(40) / 100)
    assert not big.exact and big.n_resamples == 10_000
    assert big.pvalue == 1 / 10_001  # Phipson & Smyth: (0 + 1) / (B + 1)


def test_permutation_false_positive_rate_under_the_null() -> None:
    rng = np.random.default_rng(8)
    alpha = 0.05
    exact = [
        S.paired_permutation_test(np.zeros(10), rng.normal(size=10)).pvalue for _ in range(2000)
    ]
    mc = [
        S.paired_permutation_test(
            np.zeros(25), rng.standard_t(3, size=25), n_resamples=999, rng=rng
        ).pvalue
        for _ in range(2000)
    ]
    assert np.mean(np.array(exact) <= alpha) <= alpha + 0.01
    assert np.mean(np.array(mc) <= alpha) <= alpha + 0.01
    # and the test is not trivially conservative
    assert np.mean(np.array(exact) <= alpha) >= alpha - 0.015


# --------------------------------------------------------------------------- t-tests, TOST


def test_paired_t_test_on_student_sleep_data() -> None:
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) with the sign flipped (b - a):
    # t = 4.0621, df = 9, p-value = 0.002833, 95% CI 0.7001142 2.4598858, mean diff 1.58.
    r = S.paired_t_test(SLEEP_1, SLEEP_2)
    assert r.statistic == pytest.approx(4.0621, abs=1e-4)
    assert r.df == 9
    assert r.pvalue == pytest.approx(0.002833, abs=1e-6)
    assert (r.low, r.high) == pytest.approx((0.7001142, 2.4598858), abs=1e-7)
    assert r.effect == pytest.approx(1.58)
    assert S.cohens_dz(SLEEP_1, SLEEP_2) == pytest.approx(1.58 / 1.229995, rel=1e-6)


def test_welch_t_test_on_student_sleep_data() -> None:
    # R: t.test(extra ~ group, data = sleep): t = -1.8608, df = 17.776, p-value = 0.07939,
    # 95% CI -3.3654832 0.2054832 (for group 1 - group 2; here b - a, so signs flip).
    r = S.welch_t_test(SLEEP_1, SLEEP_2)
    assert r.statistic == pytest.approx(1.8608, abs=1e-4)
    assert r.df == pytest.approx(17.776, abs=1e-3)
    assert r.pvalue == pytest.approx(0.07939, abs=1e-5)
    assert (r.low, r.high) == pytest.approx((-0.2054832, 3.3654832), abs=1e-7)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_t_tests_match_scipy(alternative: str) -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=15), rng.normal(0.3, 2.0, size=15)
    for ours, ref in (
        (
            S.paired_t_test(a, b, alternative=alternative),
            sps.ttest_rel(b, a, alternative=alternative),
        ),
        (
            S.welch_t_test(a, b[:11], alternative=alternative),
            sps.ttest_ind(b[:11], a, equal_var=False, alternative=alternative),
        ),
    ):
        ci = ref.confidence_interval(0.9)
        assert ours.statistic == pytest.approx(ref.statistic)
        assert ours.pvalue == pytest.approx(ref.pvalue)
        assert ours.df == pytest.approx(ref.df)
        again = (
            S.paired_t_test(a, b, alternative=alternative, confidence=0.9)
            if ours.test == "paired"
            else S.welch_t_test(a, b[:11], alternative=alternative, confidence=0.9)
        )
        assert (again.low, again.high) == pytest.approx((ci.low, ci.high))


def test_t_test_zero_variance() -> None:
    r = S.paired_t_test([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert r.statistic == math.inf and r.pvalue == 0.0 and r.low == r.high == 0.5
    assert S.paired_t_test([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], alternative="less").pvalue == 1.0
    z = S.paired_t_test([1.0, 2.0], [1.0, 2.0])
    assert (z.statistic, z.pvalue) == (0.0, 1.0)
    w = S.welch_t_test([1.0, 1.0], [2.0, 2.0, 2.0])
    assert w.pvalue == 0.0 and w.df == 3
    assert S.cohens_dz([1.0, 2.0], [2.0, 3.0]) == math.inf
    assert S.cohens_dz([1.0, 2.0], [0.0, 1.0]) == -math.inf
    assert math.isnan(S.cohens_dz([1.0, 2.0], [1.0, 2.0]))


def test_tost_paired() -> None:
    rng = np.random.default_rng(10)
    a = rng.normal(size=30)
    b = a + rng.normal(0.02, 0.1, size=30)
    r = S.tost_paired(a, b, margin=0.1)
    assert r.equivalent and r.pvalue < 0.05
    assert -0.1 < r.low < r.high < 0.1
    # The 90% interval of TOST is the two-sided 90% t-interval.
    t90 = S.paired_t_test(a, b, confidence=0.9)
    assert (r.low, r.high) == pytest.approx((t90.low, t90.high))
    wide = S.tost_paired(a, b, margin=0.02)
    assert not wide.equivalent and wide.pvalue == max(wide.p_lower, wide.p_upper)
    assert S.tost_paired([0.0, 1.0], [0.01, 1.01], margin=0.1).equivalent
    assert not S.tost_paired([0.0, 1.0], [0.5, 1.5], margin=0.1).equivalent


def test_tost_matches_statsmodels() -> None:
    weightstats = _optional("statsmodels.stats.weightstats")
    rng = np.random.default_rng(11)
    a = rng.normal(size=20)
    b = a + rng.normal(0.05, 0.2, size=20)
    p, lower, upper = weightstats.ttost_paired(b, a, -0.15, 0.15)
    r = S.tost_paired(a, b, margin=0.15)
    assert r.pvalue == pytest.approx(p)
    assert (r.p_lower, r.p_upper) == pytest.approx((lower[1], upper[1]))


@pytest.mark.parametrize(("n", "at_least", "at_most"), [(12, 0.02, 0.05), (40, 0.04, 0.06)])
def test_tost_false_equivalence_rate_at_the_margin(n: int, at_least: float, at_most: float) -> None:
    # With the true effect exactly on the margin, TOST declares equivalence with probability
    # at most alpha: well below it with few seeds (the other one-sided test rarely rejects as
    # well), close to it with many (there the bound is alpha up to Monte Carlo error, ±0.007).
    rng = np.random.default_rng(12)
    margin, alpha, sims = 0.5, 0.05, 4000
    d = rng.normal(margin, 1.0, size=(sims, n))
    hits = sum(S.tost_paired(np.zeros(n), row, margin=margin, alpha=alpha).equivalent for row in d)
    assert at_least <= hits / sims <= at_most


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize(
    ("d", "kwargs", "n"),
    [
        # G*Power 3 (t tests, matched pairs, a priori) and R power.t.test(type = "paired")
        (0.5, {}, 34),
        (0.8, {}, 15),
        (1.0, {}, 10),
        (0.2, {}, 199),
        (0.5, {"power": 0.95}, 54),
        (0.5, {"alternative": "greater"}, 27),
        (0.5, {"alternative": "less"}, 27),
    ],
)
def test_required_seeds_match_power_tables(d: float, kwargs: dict[str, Any], n: int) -> None:
    sd = 0.02  # units do not matter: only effect / sd_diff does
    assert S.required_seeds(sd, d * sd, **kwargs) == n
    target = kwargs.get("power", 0.8)
    alt = kwargs.get("alternative", "two-sided")
    signed = -d * sd if alt == "less" else d * sd
    assert S.paired_t_power(signed, sd, n, alternative=alt) >= target
    assert S.paired_t_power(signed, sd, n - 1, alternative=alt) < target


def test_power_matches_statsmodels_and_mde_inverts_it() -> None:
    assert S.paired_t_power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    mde = S.minimum_detectable_effect(0.3, 20, power=0.9)
    assert S.paired_t_power(mde, 0.3, 20) == pytest.approx(0.9, abs=1e-9)
    assert S.required_seeds(0.3, mde, power=0.9) == 20
    mde_less = S.minimum_detectable_effect(0.3, 20, alternative="less")
    assert S.paired_t_power(-mde_less, 0.3, 20, alternative="less") == pytest.approx(0.8)
    power_mod = _optional("statsmodels.stats.power")
    ref = power_mod.TTestPower().power(effect_size=0.3, nobs=12, alpha=0.05, alternative="larger")
    assert S.paired_t_power(0.3, 1.0, 12, alternative="greater") == pytest.approx(ref)
    with pytest.raises(ValueError, match="max_n"):
        S.required_seeds(1.0, 0.001, max_n=1000)


@pytest.mark.parametrize(
    ("effect", "n", "alternative"), [(0.8, 15, "two-sided"), (0.4, 20, "greater")]
)
def test_power_matches_simulation(effect: float, n: int, alternative: str) -> None:
    rng = np.random.default_rng(13)
    sims = 4000
    d = rng.normal(effect, 1.0, size=(sims, n))
    rejected = sum(
        S.paired_t_test(np.zeros(n), row, alternative=alternative).pvalue < 0.05 for row in d
    )
    computed = S.paired_t_power(effect, 1.0, n, alternative=alternative)
    assert abs(rejected / sims - computed) < 0.03


# --------------------------------------------------------------------------- effect sizes


def test_probability_of_improvement() -> None:
    r = S.probability_of_improvement([0, 0, 0, 0], [1, -1, 0, 1])
    assert r.estimate == 0.625 and r.paired
    assert r.low <= r.estimate <= r.high
    all_wins = S.probability_of_improvement([0, 0, 0], [1, 1, 1])
    assert (all_wins.estimate, all_wins.low, all_wins.high) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(14)
    a, b = rng.normal(size=30), np.round(rng.normal(0.5, 1.0, size=25), 1)
    u = S.probability_of_improvement(a, b, paired=False)
    mw = sps.mannwhitneyu(b, a).statistic / (len(a) * len(b))
    assert u.estimate == pytest.approx(mw) and not u.paired
    assert 0.0 <= u.low < u.estimate < u.high <= 1.0


def test_unpaired_probability_of_improvement_matches_rliable_interval() -> None:
    rly = _optional("rliable.library")
    metrics = _optional("rliable.metrics")
    rng = np.random.default_rng(15)
    a, b = rng.normal(size=(20, 1)), rng.normal(0.3, 1.0, size=(20, 1))
    ours = S.probability_of_improvement(a[:, 0], b[:, 0], paired=False, n_resamples=4000)
    point, ci = rly.get_interval_estimates(
        {"pair": (b, a)},
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=4000,
    )
    assert ours.estimate == pytest.approx(point["pair"][0])
    assert ours.low == pytest.approx(ci["pair"][0, 0], abs=0.03)
    assert ours.high == pytest.approx(ci["pair"][1, 0], abs=0.03)


def test_aso_properties() -> None:
    rng = np.random.default_rng(16)
    low, high = rng.normal(0.0, 1.0, 20), rng.normal(3.0, 1.0, 20)
    clear = S.aso(low, high)
    assert clear.epsilon_min < 0.05 and clear.dominant and clear.tau == 0.5
    assert S.aso(high, low).epsilon_min > 0.95 and not S.aso(high, low).dominant
    same = rng.normal(size=40)
    assert S.aso(same, same.copy()).violation_ratio == 0.5
    assert S.aso(rng.normal(size=30), rng.normal(size=30)).epsilon_min >= 0.5
    strict = S.aso(rng.normal(size=30), rng.normal(0.6, 1.0, size=30), tau=0.2)
    assert strict.dominant == (strict.epsilon_min < 0.2)


def test_aso_matches_deep_significance() -> None:
    deepsig = _optional("deepsig")
    rng = np.random.default_rng(17)
    for a, b in [
        (rng.normal(0.0, 1.0, 30), rng.normal(0.5, 1.0, 25)),
        (rng.normal(0.0, 1.0, 20), rng.normal(0.0, 1.0, 20)),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = deepsig.aso(b, a, seed=1, show_progress=False, num_bootstrap_iterations=300)
        ours = S.aso(a, b, n_resamples=1000)
        # Different bootstrap streams (and 300 resamples there, to keep its Python loop quick)
        # and deep-significance's grid integration: the bound agrees up to Monte Carlo noise.
        assert ours.epsilon_min == pytest.approx(ref, abs=0.05)


# --------------------------------------------------------------------------- multiple testing


def test_holm_and_bh_textbook_example() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(S.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(S.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(S.holm([0.5, 0.6]), [1.0, 1.0])
    assert S.holm([]).shape == (0,)


pvalue_lists = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30)


@given(pvalue_lists)
@settings(max_examples=200, deadline=None)
def test_adjusted_pvalues_properties(p: list[float]) -> None:
    raw = np.array(p)
    h, bh = S.holm(raw), S.benjamini_hochberg(raw)
    for adj in (h, bh):
        assert np.all(adj >= raw - 1e-15) and np.all(adj <= 1.0)
        order = np.argsort(raw, kind="stable")
        assert np.all(np.diff(adj[order]) >= -1e-15)  # monotone in the raw p-values
    assert np.all(bh <= h + 1e-15)


def test_adjusted_pvalues_match_statsmodels() -> None:
    multitest = _optional("statsmodels.stats.multitest")
    rng = np.random.default_rng(22)
    for m in (1, 2, 5, 13, 40):
        for p in (rng.uniform(size=m), rng.uniform(size=m) ** 4, np.round(rng.uniform(size=m), 1)):
            np.testing.assert_allclose(S.holm(p), multitest.multipletests(p, method="holm")[1])
            np.testing.assert_allclose(
                S.benjamini_hochberg(p), multitest.multipletests(p, method="fdr_bh")[1]
            )


# --------------------------------------------------------------------------- properties

paired_data = st.integers(2, 25).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-100, 100), min_size=n, max_size=n),
        st.lists(st.floats(-100, 100), min_size=n, max_size=n),
    )
)


@given(paired_data)
@settings(max_examples=60, deadline=None)
def test_swapping_arms_negates_the_effect(data: tuple[list[float], list[float]]) -> None:
    a, b = data
    ab = S.paired_bootstrap_ci(a, b, n_resamples=300, rng=1)
    ba = S.paired_bootstrap_ci(b, a, n_resamples=300, rng=1)
    scale = 1e-9 * (1.0 + max(map(abs, a + b)))
    assert ba.effect == pytest.approx(-ab.effect, abs=scale)
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low), abs=scale)
    assert (ba.t_low, ba.t_high) == pytest.approx((-ab.t_high, -ab.t_low), abs=scale)
    assert ab.low <= ab.effect + scale and ab.effect <= ab.high + scale
    pab, pba = S.paired_permutation_test(a, b), S.paired_permutation_test(b, a)
    assert pab.pvalue == pytest.approx(pba.pvalue)
    assert S.paired_permutation_test(a, b, alternative="greater").pvalue == pytest.approx(
        S.paired_permutation_test(b, a, alternative="less").pvalue
    )
    assert 0.0 < pab.pvalue <= 1.0


# --------------------------------------------------------------------------- tuning budget


def test_expected_max_hand_computed() -> None:
    # with replacement: P(max=1) = 1/9, P(max=2) = 3/9, P(max=3) = 5/9
    assert S.expected_max([1, 2, 3], 2) == pytest.approx(22 / 9)
    # without replacement: subsets {1,2}, {1,3}, {2,3}
    assert S.expected_max([3, 1, 2], 2, replace=False) == pytest.approx(8 / 3)
    values = np.random.default_rng(18).normal(size=17)
    assert S.expected_max(values, 1) == pytest.approx(values.mean())
    assert S.expected_max(values, 1, replace=False) == pytest.approx(values.mean())
    assert S.expected_max(values, 17, replace=False) == pytest.approx(values.max())
    assert S.expected_max(values, 10_000) == pytest.approx(values.max())
    curve = S.expected_max(values, np.arange(1, 18))
    assert isinstance(curve, np.ndarray) and curve.shape == (17,)
    assert np.all(np.diff(curve) > 0)
    assert S.expected_max([1, 1, 2, 2], [2]).tolist() == [pytest.approx(1.75)]
    with pytest.raises(ValueError, match="cannot exceed"):
        S.expected_max([1, 2, 3], 4, replace=False)
    with pytest.raises(ValueError, match="positive integer"):
        S.expected_max([1, 2, 3], 0)


def test_expected_max_without_replacement_by_enumeration() -> None:
    from itertools import combinations

    values = [0.3, 0.9, 0.5, 0.5, 0.1, 0.7]
    for k in range(1, 7):
        brute = np.mean([max(c) for c in combinations(values, k)])
        assert S.expected_max(values, k, replace=False) == pytest.approx(brute)


# --------------------------------------------------------------------------- aggregates


def test_iqm() -> None:
    assert S.iqm(np.arange(1, 9)) == 4.5
    assert S.iqm([1, 2, 3, 4, 10]) == 3.0  # trim_mean cuts floor(1.25) = 1 from each end
    assert S.iqm([1, 2, 3, 4, 10], fractional=True) == pytest.approx(0.3 * 2 + 0.4 * 3 + 0.3 * 4)
    x = np.random.default_rng(19).normal(size=(10, 7))
    assert S.iqm(x) == pytest.approx(sps.trim_mean(x, 0.25, axis=None))
    batch = np.stack([x, x + 1.0])
    np.testing.assert_allclose(S.iqm(batch, axis=(1, 2)), [S.iqm(x), S.iqm(x) + 1.0])
    y = x[:, :4]  # 40 values: both definitions agree
    assert S.iqm(y, fractional=True) == pytest.approx(S.iqm(y))


def test_aggregate_interval_paired_and_stratified() -> None:
    rng = np.random.default_rng(20)
    runs, tasks = 10, 5
    seed_effect = rng.normal(0.0, 1.0, size=(runs, tasks))  # shared by both arms (same seeds)
    scores = {
        "a": seed_effect + rng.normal(0.0, 0.1, size=(runs, tasks)),
        "b": seed_effect + 0.2 + rng.normal(0.0, 0.1, size=(runs, tasks)),
    }
    out = S.aggregate_interval(scores)
    assert set(out) == {"a", "b"}
    for name, ci in out.items():
        assert ci.estimate == pytest.approx(S.iqm(scores[name]))
        assert ci.low < ci.estimate < ci.high
        assert (ci.runs, ci.tasks, ci.paired, ci.statistic) == (runs, tasks, True, "iqm")
    paired = S.aggregate_difference(scores, "a", "b")
    unpaired = S.aggregate_difference(scores, "a", "b", paired=False)
    assert paired.estimate == pytest.approx(S.iqm(scores["b"]) - S.iqm(scores["a"]))
    assert paired.low > 0.0  # pairing removes the shared seed effect
    assert unpaired.low < 0.0 < unpaired.high
    assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)
    assert paired.label == "b - a"
    means = S.aggregate_interval(scores, statistic=np.mean, n_resamples=500)
    assert means["a"].estimate == pytest.approx(scores["a"].mean())
    assert means["a"].statistic == "mean"
    with pytest.raises(ValueError, match="same runs × tasks"):
        S.aggregate_interval({"a": np.zeros((4, 2)), "b": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="reduce the given axes"):
        S.aggregate_interval(scores, statistic=lambda x, axis: 0.0)
    with pytest.raises(ValueError, match="not an arm"):
        S.aggregate_difference(scores, "a", "c")


def test_aggregate_interval_matches_rliable() -> None:
    rly = _optional("rliable.library")
    metrics = _optional("rliable.metrics")
    rng = np.random.default_rng(21)
    scores = {"x": rng.gamma(2.0, 1.0, size=(8, 6)), "y": rng.gamma(2.5, 1.0, size=(8, 6))}
    points, cis = rly.get_interval_estimates(
        scores, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=4000
    )
    ours = S.aggregate_interval(scores, n_resamples=4000)
    for name in scores:
        width = cis[name][1, 0] - cis[name][0, 0]
        assert ours[name].estimate == pytest.approx(points[name][0])
        assert ours[name].low == pytest.approx(cis[name][0, 0], abs=0.06 * width)
        assert ours[name].high == pytest.approx(cis[name][1, 0], abs=0.06 * width)
