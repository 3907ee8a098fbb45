"""Adjusted p-values for a family of tests.

References
----------
Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scandinavian Journal
of Statistics* 6(2), 65-70.
Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate: a practical and
powerful approach to multiple testing. *JRSS B* 57(1), 289-300.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fairtrial.stats._common import FloatArray


def _pvalues(pvalues: Any) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if np.any(np.isnan(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise ValueError(f"pvalues must lie in [0, 1] without NaN, got {p.tolist()}")
    return p


def holm(pvalues: Any) -> FloatArray:
    """Holm's step-down adjusted p-values (Holm 1979), in the order of the input.

    With the p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``
    (1-based): controls the family-wise error rate; monotone in the raw p, never below it,
    capped at 1. Same as ``statsmodels.stats.multitest.multipletests(p, method="holm")``.
    """
    p = _pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out


def benjamini_hochberg(pvalues: Any) -> FloatArray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in input order.

    With the p-values sorted ascending, ``p_adj(i) = min_{j >= i} min(1, m p(j) / j)``
    (Benjamini & Hochberg 1995). Same as ``multipletests(p, method="fdr_bh")``.
    """
    p = _pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, m * p[order] / np.arange(1, m + 1))
    out = np.empty(m)
    out[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return out
