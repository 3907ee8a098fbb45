"""Two arms that share no seed: Welch's unpaired comparison (imported results only).

fairtrial's own experiments run every arm on the same seeds, so their comparisons are paired.
Results imported from elsewhere (``fairtrial analyze``) may give two arms disjoint seed sets;
with no pair to difference, :func:`compare_unpaired` compares the arms' means with Welch's
t-test and interval (unequal variances, Welch-Satterthwaite degrees of freedom), and TOST on
the same footing. :func:`seed_overlap` counts, for every imported comparison, the seeds each
arm had that the other lacked (left out of the pairs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fairtrial import stats
from fairtrial.record import Hypothesis

#: how the interval and the test of an unpaired comparison are named in the document
WELCH_INTERVAL = "Welch t (unpaired: the arms share no seed)"
WELCH_TEST = "Welch t-test (unpaired: the arms share no seed)"


def seed_overlap(
    signed: Mapping[str, Mapping[int, float]], arm: str, against: str
) -> dict[str, int]:
    """``{arm: n, against: m}``: each arm's seeds without a partner in the other."""
    a, b = set(signed.get(arm, {})), set(signed.get(against, {}))
    return {arm: len(a - b), against: len(b - a)}


def compare_unpaired(
    base: np.ndarray[Any, Any],
    arm: np.ndarray[Any, Any],
    hyp: Hypothesis,
    *,
    n_resamples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The statistics of one unpaired comparison (scores signed: higher is better); each arm
    needs at least 2 values. The keys are those of a paired comparison
    (:func:`fairtrial.analysis.verdicts.compare`), ``n_pairs`` 0 and ``unpaired`` true; the
    statistics of differences (sd, d_z, the minimum detectable effect, wins) do not exist."""
    confidence = 1.0 - hyp.alpha
    tt = stats.welch_t_test(base, arm, confidence=confidence)
    poi = stats.probability_of_improvement(
        base, arm, paired=False, confidence=confidence, n_resamples=n_resamples, rng=rng
    )
    iv = [_r(tt.low), _r(tt.high)]
    out: dict[str, Any] = {
        "n_pairs": 0,
        "unpaired": True,
        "effect": _r(tt.effect),
        "sd_diff": None,
        "interval": iv,
        "interval_method": WELCH_INTERVAL,
        "bca_interval": None,
        "t_interval": iv,
        "p": _p(tt.pvalue),
        "p_method": WELCH_TEST,
        "p_t": _p(tt.pvalue),
        "d_z": None,
        "prob_improvement": {
            "estimate": _r(poi.estimate, 4),
            "interval": [_r(poi.low, 4), _r(poi.high, 4)],
        },
        "tost": None,
        "mde": None,
        "wins": 0,
        "losses": 0,
        "ties": 0,
    }
    if hyp.smallest_effect is not None:
        out["tost"] = welch_tost(base, arm, hyp.smallest_effect, hyp.alpha)
    return out


def welch_tost(
    base: np.ndarray[Any, Any], arm: np.ndarray[Any, Any], margin: float, alpha: float
) -> dict[str, Any]:
    """Two one-sided Welch t-tests: is ``mean(arm) - mean(base)`` within ±``margin``?

    Each shifts the arm by the margin and tests one side at ``alpha``; equivalent when the
    larger p is below ``alpha``, the same as the (1 - 2 alpha) Welch interval lying inside
    (-margin, margin) (Schuirmann 1987)."""
    lower = stats.welch_t_test(base, arm + margin, alternative="greater")
    upper = stats.welch_t_test(base, arm - margin, alternative="less")
    band = stats.welch_t_test(base, arm, confidence=1.0 - 2.0 * alpha)
    pvalue = max(lower.pvalue, upper.pvalue)
    return {
        "pvalue": _p(pvalue),
        "equivalent": bool(pvalue < alpha),
        "margin": margin,
        "interval": [_r(band.low), _r(band.high)],
    }


def _r(x: float, digits: int = 6) -> float | None:
    return round(float(x), digits) if math.isfinite(float(x)) else None


def _p(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None
