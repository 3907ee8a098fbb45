"""Multi-task aggregates: the interquartile mean and stratified, paired bootstrap intervals.

References
----------
Agarwal, R., Schwarzer, M., Castro, P. S., Courville, A. & Bellemare, M. G. (2021). Deep
reinforcement learning at the edge of the statistical precipice. *NeurIPS 2021* (IQM,
stratified bootstrap confidence intervals; the ``rliable`` library).
Efron, B. & Tibshirani, R. (1993). *An Introduction to the Bootstrap*, §13.3 (percentile
interval).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.stats._common import (
    FloatArray,
    Result,
    RngLike,
    as_rng,
    check_confidence,
    check_resamples,
)

_BLOCK_ELEMENTS = 2_000_000

Statistic = Callable[..., Any]


def iqm(scores: Any, *, axis: int | tuple[int, ...] | None = None, fractional: bool = False) -> Any:
    """Interquartile mean: the mean of the middle 50% of all scores (Agarwal et al. 2021).

    ``scores`` of any shape (e.g. runs × tasks) are pooled, as rliable does. By default the
    lowest and highest ``floor(0.25 m)`` of the ``m`` pooled values are dropped, which is
    ``scipy.stats.trim_mean(scores, 0.25, axis=None)`` and rliable's ``aggregate_iqm``.
    ``fractional=True`` instead weights the boundary values by the fraction of them that lies
    inside the middle half, i.e. ``2 ∫_{0.25}^{0.75} Q(u) du`` of the empirical quantile
    function; both agree when ``m`` is a multiple of 4.

    ``axis`` (an int or a tuple) reduces only those axes, like numpy's reductions, so that
    :func:`aggregate_interval` can evaluate many bootstrap samples at once; ``None`` (default)
    reduces everything and returns a float.
    """
    x = np.asarray(scores, dtype=np.float64)
    if axis is None:
        axes: tuple[int, ...] = tuple(range(x.ndim))
    elif isinstance(axis, int):
        axes = (axis,)
    else:
        axes = tuple(axis)
    axes = tuple(a % x.ndim for a in axes) if x.ndim else ()
    keep = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, keep + list(axes))
    flat = moved.reshape(*[x.shape[i] for i in keep], -1)
    m = flat.shape[-1]
    if m == 0:
        raise ValueError("iqm needs at least one score")
    srt = np.sort(flat, axis=-1)
    if fractional:
        edges = np.arange(m + 1) / m
        weights = 2.0 * np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0, None)
        out = srt @ weights
    else:
        cut = int(0.25 * m)
        out = srt[..., cut : m - cut].mean(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class AggregateCI(Result):
    """An aggregate score (or a difference of two) with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    paired: bool
    statistic: str  # the statistic's name, e.g. "iqm"
    runs: int
    tasks: int
    method: str = "percentile"
    label: str = ""  # the arm, or "b - a" for a difference


def _score_table(scores: Mapping[str, Any]) -> dict[str, FloatArray]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping of arm name → runs × tasks array")
    out: dict[str, FloatArray] = {}
    for name, value in scores.items():
        x = np.asarray(value, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"scores[{name!r}] must be runs × tasks (2-D), got shape {x.shape}")
        if x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError(f"scores[{name!r}] needs at least 2 runs, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"scores[{name!r}] holds a NaN or infinite value")
        out[str(name)] = x
    return out


def _check_paired_shapes(table: Mapping[str, FloatArray]) -> tuple[int, int]:
    shapes = {name: x.shape for name, x in table.items()}
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if shape != first:
            raise ValueError(
                "paired resampling needs every arm to have the same runs × tasks shape "
                f"(run i = seed i): {dict(shapes)}; pass paired=False for unpaired arms"
            )
        del name
    return int(first[0]), int(first[1])


def _apply(statistic: Statistic, samples: FloatArray) -> FloatArray:
    out = np.asarray(statistic(samples, axis=(-2, -1)), dtype=np.float64)
    if out.shape != samples.shape[:-2]:
        raise ValueError(
            "statistic must reduce the given axes like numpy's reductions: "
            f"statistic(x, axis=(-2, -1)) returned shape {out.shape} for x of shape "
            f"{samples.shape}"
        )
    return out


def _bootstrap(
    table: Mapping[str, FloatArray],
    statistic: Statistic,
    n_resamples: int,
    paired: bool,
    gen: np.random.Generator,
) -> dict[str, FloatArray]:
    """Bootstrap distribution of ``statistic`` per arm: runs resampled within each task.

    Paired: one index draw (resample × run × task) is applied to every arm, since run i of
    every arm is seed i. Unpaired: each arm gets its own draw.
    """
    out = {name: np.empty(n_resamples) for name in table}
    size = max(x.size for x in table.values())
    block = max(1, _BLOCK_ELEMENTS // size)
    for start in range(0, n_resamples, block):
        m = min(block, n_resamples - start)
        shared = None
        for name, x in table.items():
            runs, tasks = x.shape
            if shared is None or not paired:
                shared = gen.integers(0, runs, size=(m, runs, tasks))
            samples = x[shared, np.arange(tasks)[None, None, :]]
            out[name][start : start + m] = _apply(statistic, samples)
    return out


def _percentile(stars: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stars, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _name(statistic: Statistic) -> str:
    return str(getattr(statistic, "__name__", None) or getattr(statistic, "func", statistic))


def aggregate_interval(
    scores: Mapping[str, Any],
    *,
    statistic: Statistic = iqm,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    paired: bool = True,
    rng: RngLike = None,
) -> dict[str, AggregateCI]:
    """Aggregate score of each arm over runs × tasks with a stratified bootstrap interval.

    ``scores`` maps arm name → array of shape (runs, tasks) (a 1-D array is one task). The
    bootstrap is stratified (Agarwal et al. 2021): runs are resampled with replacement within
    each task. With ``paired=True`` (default) every arm gets the same resampled run indices,
    because runs are seeds shared across arms; all arms must then have the same shape. The
    interval is the percentile interval of the bootstrap distribution (as rliable's default).

    ``statistic(x, axis=(-2, -1))`` must reduce the runs and tasks axes of a batch of samples,
    like ``np.mean``, ``np.median`` or :func:`iqm` (default). ``rng``: Generator, int seed or
    ``None`` for a generator seeded with 0 (deterministic by default).
    """
    table = _score_table(scores)
    confidence = check_confidence(confidence)
    n_resamples = check_resamples(n_resamples, minimum=2)
    if paired:
        _check_paired_shapes(table)
    stars = _bootstrap(table, statistic, n_resamples, paired, as_rng(rng))
    result = {}
    for name, x in table.items():
        low, high = _percentile(stars[name], confidence)
        result[name] = AggregateCI(
            estimate=float(_apply(statistic, x[None, :, :])[0]),
            low=low,
            high=high,
            confidence=confidence,
            n_resamples=n_resamples,
            paired=bool(paired),
            statistic=_name(statistic),
            runs=x.shape[0],
            tasks=x.shape[1],
            label=name,
        )
    return result


def aggregate_difference(
    scores: Mapping[str, Any],
    a: str,
    b: str,
    *,
    statistic: Statistic = iqm,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    paired: bool = True,
    rng: RngLike = None,
) -> AggregateCI:
    """``statistic(b) - statistic(a)`` with a stratified (and by default paired) bootstrap
    interval: each resample draws run indices within each task once and applies them to both
    arms, so the seed-to-seed variation shared by the arms cancels (Agarwal et al. 2021's
    stratified bootstrap, paired across arms). Other parameters as :func:`aggregate_interval`.
    """
    for name, role in ((a, "a"), (b, "b")):
        if name not in scores:
            raise ValueError(f"{role}={name!r} is not an arm of scores: {sorted(scores)}")
    if a == b:
        raise ValueError(f"a and b must be different arms, got {a!r} twice")
    table = _score_table({a: scores[a], b: scores[b]})
    confidence = check_confidence(confidence)
    n_resamples = check_resamples(n_resamples, minimum=2)
    if paired:
        _check_paired_shapes(table)
    stars = _bootstrap(table, statistic, n_resamples, paired, as_rng(rng))
    diff = stars[b] - stars[a]
    low, high = _percentile(diff, confidence)
    est = float(
        _apply(statistic, table[b][None, :, :])[0] - _apply(statistic, table[a][None, :, :])[0]
    )
    return AggregateCI(
        estimate=est,
        low=low,
        high=high,
        confidence=confidence,
        n_resamples=n_resamples,
        paired=bool(paired),
        statistic=_name(statistic),
        runs=table[b].shape[0],
        tasks=table[b].shape[1],
        label=f"{b} - {a}",
    )
