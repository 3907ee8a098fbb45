"""Input checking and result plumbing shared by every function of :mod:`fairtrial.stats`.

All checks live here so that every public function fails the same way: a ``ValueError`` whose
message names the parameter and says what would be valid.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
RngLike = np.random.Generator | int | None

ALTERNATIVES = ("two-sided", "greater", "less")


def as_rng(rng: RngLike) -> np.random.Generator:
    """``None`` → a generator seeded with 0 (deterministic by default), int → seeded generator."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, not {rng!r}")


def as_sample(x: Any, name: str, *, min_n: int = 2) -> FloatArray:
    """A 1-D float array of at least ``min_n`` finite values."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) < min_n:
        raise ValueError(f"{name} needs at least {min_n} values, got {len(arr)}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} holds a NaN or infinite value (at index {bad}: {arr[bad]})")
    return arr


def paired_differences(a: Any, b: Any) -> FloatArray:
    """``b - a`` for paired samples (pair i = seed i), after checking both."""
    xa = as_sample(a, "a", min_n=0)
    xb = as_sample(b, "b", min_n=0)
    if len(xa) != len(xb):
        raise ValueError(
            f"paired samples need the same length (pair i = seed i): "
            f"a has {len(xa)} values, b has {len(xb)}"
        )
    if len(xa) < 2:
        raise ValueError(f"paired samples need at least 2 pairs, got {len(xa)}")
    return xb - xa


def check_confidence(confidence: float, name: str = "confidence") -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return c


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 0.5:
        raise ValueError(f"alpha must be strictly between 0 and 0.5 (e.g. 0.05), got {alpha!r}")
    return a


def check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"alternative must be one of {', '.join(repr(a) for a in ALTERNATIVES)}, "
            f"got {alternative!r}"
        )
    return alternative


def check_resamples(n_resamples: int, name: str = "n_resamples", minimum: int = 1) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {n_resamples!r}")
    if n_resamples < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {n_resamples}")
    return int(n_resamples)


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Result:
    """Mixin for the frozen result dataclasses: ``to_dict()`` gives JSON-ready plain values.

    Non-finite floats (an infinite bound of a one-sided interval, an undefined statistic) become
    ``None``, since JSON has no infinity or NaN.
    """

    def to_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
