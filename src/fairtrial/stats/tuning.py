"""Expected best validation score after k tuning trials, and the tuning curve with its interval.

Reference: Dodge, J., Gururangan, S., Card, D., Schwartz, R. & Smith, N. A. (2019). Show your
work: improved reporting of experimental results. *EMNLP 2019*, 2185-2194.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from fairtrial.stats._common import (
    FloatArray,
    Result,
    RngLike,
    as_rng,
    as_sample,
    check_confidence,
    check_resamples,
)

# Bootstrap index matrices are drawn in blocks of at most this many elements (bounded memory).
_BLOCK_ELEMENTS = 2_000_000


def _ks(k: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    arr = np.asarray(k)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"k must be a positive integer or an array of them, got {k!r}")
    if np.any(arr != np.round(arr)) or np.any(arr < 1):
        raise ValueError(f"k must be a positive integer or an array of them, got {k!r}")
    return arr.astype(np.int64)


@overload
def expected_max(values: Any, k: int, *, replace: bool = True) -> float: ...


@overload
def expected_max(values: Any, k: Any, *, replace: bool = True) -> float | FloatArray: ...


def expected_max(values: Any, k: Any, *, replace: bool = True) -> float | FloatArray:
    """Expected maximum of ``k`` draws from the observed tuning results ``values`` (Dodge 2019).

    ``values``: the validation scores of n tuning trials (higher is better; negate a loss).
    With ``replace=True`` the k draws are i.i.d. from the empirical distribution:
    ``E = Σ_i v_(i) [(i/n)^k - ((i-1)/n)^k]`` over the ascending order statistics (Dodge et al.
    2019, eq. 1 with the ECDF). With ``replace=False`` the k trials are a random subset of the n
    observed ones (``k <= n``): ``P(max = v_(i)) = C(i-1, k-1) / C(n, k)``.

    ``k`` may be an int (returns a float) or an array of ints (returns an array of the same
    shape). ``k = 1`` gives the mean; as ``k`` grows the value tends to (without replacement, at
    ``k = n`` equals) the maximum.
    """
    from scipy.special import gammaln

    v = np.sort(as_sample(values, "values", min_n=1))
    n = len(v)
    ks = _ks(k)
    flat = ks.ravel()
    if replace:
        # (i/n)^k through exp/log1p keeps precision for huge k without overflow.
        # (i/n)^k through exp(k log(i/n)) stays finite for huge k (it underflows to 0).
        with np.errstate(divide="ignore"):
            log_cdf = np.log(np.arange(0, n + 1, dtype=np.float64) / n)
        cdf = np.exp(flat[:, None].astype(np.float64) * log_cdf[None, :])
        weights = cdf[:, 1:] - cdf[:, :-1]
    else:
        if np.any(flat > n):
            raise ValueError(
                f"without replacement k cannot exceed the number of values ({n}), got "
                f"{int(flat.max())}"
            )
        kk = flat[:, None].astype(np.float64)
        ii = np.arange(1, n + 1, dtype=np.float64)[None, :]
        valid = ii >= kk
        # log C(i-1, k-1) - log C(n, k), only where i >= k
        log_w = (
            gammaln(ii)
            - gammaln(np.where(valid, kk, 1.0))
            - gammaln(np.where(valid, ii - kk + 1.0, 1.0))
            - (gammaln(n + 1.0) - gammaln(kk + 1.0) - gammaln(n - kk + 1.0))
        )
        weights = np.where(valid, np.exp(log_w), 0.0)
    out = weights @ v
    if ks.ndim == 0:
        return float(out[0])
    return np.asarray(out.reshape(ks.shape), dtype=np.float64)


@dataclass(frozen=True)
class ExpectedMaxCurve(Result):
    """The expected best score after k = 1..budget tuning configurations, with its interval.

    ``expected[i]`` is the expected best of ``k[i]`` configurations drawn with replacement
    from the observed draws (Dodge et al. 2019, eq. 1); ``low``/``high`` its percentile
    bootstrap interval; ``without_replacement[i]`` the expected best of a random subset of
    ``k[i]`` of the observed draws, which for ``k[i] > n`` repeats the value at ``k = n``
    (the best of all of them: no more than ``n`` can be drawn). ``n`` counts the draws,
    finished and failed; ``failed`` the failed ones. The field names are those of the result
    document's tuning curve.
    """

    k: tuple[int, ...]
    expected: tuple[float, ...]
    without_replacement: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int
    failed: int
    confidence: float
    n_boot: int
    interval_method: str
    failed_as: str | None


def _weights_with_replacement(n: int, ks: np.ndarray[Any, Any]) -> FloatArray:
    """Row j: the chance that the i-th smallest of n draws is the best of ks[j] i.i.d. draws."""
    with np.errstate(divide="ignore"):
        log_cdf = np.log(np.arange(0, n + 1, dtype=np.float64) / n)
    cdf = np.exp(ks[:, None].astype(np.float64) * log_cdf[None, :])
    return np.asarray(cdf[:, 1:] - cdf[:, :-1], dtype=np.float64)


def tuning_curve(
    values: Any,
    budget: int,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    rng: RngLike,
    failed: int = 0,
) -> ExpectedMaxCurve:
    """The tuning curve of one arm: expected best validation score against k = 1..``budget``.

    ``values``: the scores of the configurations that finished, **higher is better** (the
    caller negates the scores of a ``min`` objective, and negates the curve back, swapping
    ``low`` and ``high``). ``failed``: how many configurations failed or diverged. Each is a
    draw that scores below every finished one; it enters the curve as one more draw valued at
    the lowest finished score, so it never raises the best of k and lowers it only by taking
    the place of a finished draw (k draws that all failed count as the lowest finished score).

    The with-replacement curve is Dodge et al. (2019), eq. 1, over the ``n = len(values) +
    failed`` draws; its interval is a percentile bootstrap: ``n_boot`` resamples of the n
    draws (failed ones included, so the failure rate varies too) drawn with ``rng``, the curve
    recomputed on each, and the ``(1 ± confidence) / 2`` quantiles taken at every k. The
    without-replacement curve (:func:`expected_max` with ``replace=False``) is defined for
    k <= n; beyond, it repeats its value at ``k = n``.

    ``rng`` is required (a ``numpy.random.Generator`` or an int seed): the interval depends
    on it. At least one finished configuration is needed (with none there is no score to
    draw): otherwise ``ValueError``.
    """
    scores = as_sample(values, "values", min_n=0)
    if len(scores) == 0:
        raise ValueError(
            "values needs at least 1 finished configuration's score (with none, no curve)"
        )
    if isinstance(failed, bool) or not isinstance(failed, (int, np.integer)) or failed < 0:
        raise ValueError(f"failed must be an int >= 0 (configurations that failed), got {failed!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be an int >= 1 (configurations per arm), got {budget!r}")
    conf = check_confidence(confidence)
    n_boot = check_resamples(n_boot, "n_boot")
    gen = as_rng(rng)
    floor = float(scores.min())
    draws = np.sort(np.concatenate([np.full(int(failed), floor), scores]))
    n = len(draws)
    ks = np.arange(1, int(budget) + 1, dtype=np.int64)
    weights = _weights_with_replacement(n, ks)
    expected = weights @ draws
    inside = ks[ks <= n]
    without = np.asarray(expected_max(draws, inside, replace=False), dtype=np.float64)
    without = np.concatenate([without, np.full(len(ks) - len(inside), without[-1])])
    curves = np.empty((n_boot, len(ks)))
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        resampled = np.sort(draws[gen.integers(0, n, size=(stop - start, n))], axis=1)
        curves[start:stop] = resampled @ weights.T
    alpha = 1.0 - conf
    low, high = np.quantile(curves, [alpha / 2, 1 - alpha / 2], axis=0)
    method = f"percentile bootstrap, {n_boot} resamples of the {n} tuning draws, {conf:.0%}"
    failed_as = (
        f"{failed} failed configuration(s) drawn as the lowest finished score ({floor:.6g}): "
        "they never raise the best of k, which is that score only when all k draws failed"
        if failed
        else None
    )
    return ExpectedMaxCurve(
        k=tuple(int(k) for k in ks),
        expected=tuple(float(x) for x in expected),
        without_replacement=tuple(float(x) for x in without),
        low=tuple(float(x) for x in low),
        high=tuple(float(x) for x in high),
        n=n,
        failed=int(failed),
        confidence=conf,
        n_boot=n_boot,
        interval_method=method,
        failed_as=failed_as,
    )
