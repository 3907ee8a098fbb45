"""The tuning curve: expected best score after k configurations, with its bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairtrial.stats import ExpectedMaxCurve, expected_max, tuning_curve


def test_the_curve_by_hand() -> None:
    # values sorted: 0.1, 0.3, 0.5 (n = 3)
    c = tuning_curve([0.1, 0.5, 0.3], 3, rng=np.random.default_rng(0))
    assert isinstance(c, ExpectedMaxCurve) and c.k == (1, 2, 3) and c.n == 3 and c.failed == 0
    # with replacement, P(best = v_(i)) = (i/n)^k - ((i-1)/n)^k
    # k=1: the mean, (0.1 + 0.3 + 0.5) / 3
    # k=2: weights 1/9, 3/9, 5/9: (0.1 + 0.9 + 2.5) / 9
    # k=3: weights 1/27, 7/27, 19/27: (0.1 + 2.1 + 9.5) / 27
    assert c.expected == pytest.approx([0.9 / 3, 3.5 / 9, 11.7 / 27])
    # without replacement, k=2: the three pairs' best are 0.3, 0.5, 0.5; k=3: the maximum
    assert c.without_replacement == pytest.approx([0.3, (0.3 + 0.5 + 0.5) / 3, 0.5])
    assert c.failed_as is None and "percentile bootstrap, 2000 resamples" in c.interval_method


def test_beyond_the_draws_without_replacement_repeats_the_best_of_all() -> None:
    c = tuning_curve([0.1, 0.5, 0.3], 5, rng=np.random.default_rng(0))
    assert c.k == (1, 2, 3, 4, 5)
    assert c.without_replacement[3:] == (c.without_replacement[2],) * 2
    assert c.without_replacement[2] == pytest.approx(0.5)
    # with replacement k=5: weights (1/3)^5, (2/3)^5 - (1/3)^5, 1 - (2/3)^5
    assert c.expected[4] == pytest.approx((0.1 * 1 + 0.3 * 31 + 0.5 * 211) / 243)


def test_failed_configurations_draw_as_the_lowest_finished_score() -> None:
    c = tuning_curve([0.1, 0.5, 0.3], 4, rng=np.random.default_rng(0), failed=1)
    assert c.n == 4 and c.failed == 1
    assert c.failed_as is not None and "lowest finished score (0.1)" in c.failed_as
    # the draws: 0.1 (the failed one), 0.1, 0.3, 0.5
    # k=1: (0.1 + 0.1 + 0.3 + 0.5) / 4; k=2: weights 1/16, 3/16, 5/16, 7/16
    assert c.expected[:2] == pytest.approx([1.0 / 4, (0.1 + 0.3 + 1.5 + 3.5) / 16])
    # without replacement k=2, the 6 pairs' best: 0.1, 0.3, 0.5, 0.3, 0.5, 0.5
    assert c.without_replacement[1] == pytest.approx(2.2 / 6)
    # a failure never helps: the curve is below the one without it
    plain = tuning_curve([0.1, 0.5, 0.3], 4, rng=np.random.default_rng(0))
    assert all(a <= b + 1e-12 for a, b in zip(c.expected, plain.expected, strict=True))


def test_the_curve_is_expected_max_and_the_interval_holds_it() -> None:
    values = np.random.default_rng(5).normal(0.8, 0.05, size=17)
    c = tuning_curve(values, 25, rng=np.random.default_rng(1), confidence=0.9, n_boot=500)
    ks = np.arange(1, 26)
    assert c.expected == pytest.approx(expected_max(values, ks).tolist())
    assert c.without_replacement[:17] == pytest.approx(
        expected_max(values, ks[:17], replace=False).tolist()
    )
    assert all(np.diff(c.expected) >= -1e-12)
    assert all(lo <= e <= hi for lo, e, hi in zip(c.low, c.expected, c.high, strict=True))
    assert c.high[0] > c.low[0] and "500 resamples of the 17 tuning draws, 90%" in c.interval_method
    data = c.to_dict()
    assert data["k"] == list(range(1, 26)) and len(data["low"]) == 25


def test_the_interval_is_reproducible_from_the_generator() -> None:
    values = [0.61, 0.72, 0.55, 0.8, 0.79, 0.3]
    a = tuning_curve(values, 8, rng=np.random.default_rng(42), n_boot=300)
    b = tuning_curve(values, 8, rng=np.random.default_rng(42), n_boot=300)
    other = tuning_curve(values, 8, rng=np.random.default_rng(43), n_boot=300)
    assert a == b
    assert (a.low, a.high) != (other.low, other.high) and a.expected == other.expected
    assert tuning_curve(values, 8, rng=42, n_boot=300) == a  # an int seeds a generator


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    values=st.lists(
        st.floats(-10, 10, allow_nan=False, allow_infinity=False), min_size=1, max_size=12
    ),
    budget=st.integers(1, 20),
    failed=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_interval_contains_the_curve(
    values: list[float], budget: int, failed: int, seed: int
) -> None:
    c = tuning_curve(values, budget, rng=np.random.default_rng(seed), n_boot=200, failed=failed)
    assert len(c.k) == len(c.expected) == len(c.low) == len(c.high) == budget
    for lo, e, hi in zip(c.low, c.expected, c.high, strict=True):
        assert lo - 1e-9 <= e <= hi + 1e-9
    assert min(values) - 1e-9 <= c.expected[0] and c.expected[-1] <= max(values) + 1e-9


def test_bad_input_names_the_parameter() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="values needs at least 1 finished"):
        tuning_curve([], 3, rng=rng, failed=2)
    with pytest.raises(ValueError, match="failed must be an int >= 0"):
        tuning_curve([0.1], 3, rng=rng, failed=-1)
    with pytest.raises(ValueError, match="budget must be an int >= 1"):
        tuning_curve([0.1], 0, rng=rng)
    with pytest.raises(ValueError, match="values holds a NaN"):
        tuning_curve([0.1, float("nan")], 2, rng=rng)
    with pytest.raises(ValueError, match="n_boot must be at least 1"):
        tuning_curve([0.1], 2, rng=rng, n_boot=0)
    with pytest.raises(ValueError, match="confidence must be strictly between 0 and 1"):
        tuning_curve([0.1], 2, rng=rng, confidence=1.5)
    with pytest.raises(TypeError):
        tuning_curve([0.1], 2)  # type: ignore[call-arg]  # the generator is required
