"""Expected best validation score after k tuning trials.

Reference: Dodge, J., Gururangan, S., Card, D., Schwartz, R. & Smith, N. A. (2019). Show your
work: improved reporting of experimental results. *EMNLP 2019*, 2185-2194.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from fairtrial.stats._common import FloatArray, as_sample


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
