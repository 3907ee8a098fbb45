"""Effects of one claim across several tasks: a stratified paired bootstrap of the normalised
per-task effects (mean and IQM over tasks), and performance profiles. The rank tests are in
:mod:`fairtrial.stats.across`.

References
----------
Agarwal, R. et al. (2021). Deep reinforcement learning at the edge of the statistical
precipice. *NeurIPS 2021* (stratified bootstrap, IQM over tasks).
Dolan, E. D. & Moré, J. J. (2002). Benchmarking optimization software with performance
profiles. *Mathematical Programming* 91(2), 201-213.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from fairtrial.stats.across import NORMALISATIONS, PROFILE_MEASURES, _score_matrix
from fairtrial.stats.aggregate import iqm
from fairtrial.stats.bootstrap import bootstrap_means


# -- stratified paired bootstrap over tasks -------------------------------------------------------
@dataclass(frozen=True)
class AcrossTasksCI(Result):
    """Result of :func:`stratified_paired_bootstrap`.

    ``effects`` are the per-task normalised mean paired effects (in the order of ``tasks``);
    ``mean`` and ``iqm`` aggregate them over tasks, each with its percentile interval.
    """

    mean: float
    mean_low: float
    mean_high: float
    iqm: float
    iqm_low: float
    iqm_high: float
    effects: tuple[float, ...]
    scales: tuple[float, ...]  # the divisor of each task's effect (1 for "none")
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    normalise: str
    confidence: float
    n_resamples: int
    method: str = "percentile"


def _task_pairs(per_task: Any) -> list[tuple[str, FloatArray, FloatArray]]:
    if isinstance(per_task, Mapping):
        items = [(str(k), v) for k, v in per_task.items()]
    elif isinstance(per_task, Sequence) and not isinstance(per_task, (str, bytes)):
        items = [(str(i), v) for i, v in enumerate(per_task)]
    else:
        raise ValueError(
            "per_task must be a mapping task name → (against, arm) or a sequence of such "
            f"pairs, got {type(per_task).__name__}"
        )
    if not items:
        raise ValueError("per_task needs at least one task")
    out = []
    for name, pair in items:
        where = f"per_task[{name!r}]"
        if not isinstance(pair, Sequence) or isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise ValueError(f"{where} must be a pair (against, arm) of per-seed scores")
        against = as_sample(pair[0], f"{where} against")
        arm = as_sample(pair[1], f"{where} arm")
        if len(against) != len(arm):
            raise ValueError(
                f"{where}: against and arm need the same number of seeds (seed i pairs with "
                f"seed i), got {len(against)} and {len(arm)}"
            )
        out.append((name, against, arm))
    return out


def _scale(name: str, against: FloatArray, normalise: str) -> float:
    if normalise == "none":
        return 1.0
    if normalise == "baseline":
        scale = abs(float(against.mean()))
        what = "the |mean| of against"
    else:
        scale = float(against.std(ddof=1))
        what = "the sd of against"
    if not scale > 0.0:
        raise ValueError(
            f"per_task[{name!r}]: normalise={normalise!r} divides by {what}, which is 0 "
            "here; use another normalisation"
        )
    return scale


def stratified_paired_bootstrap(
    per_task: Any,
    *,
    rng: RngLike = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    normalise: str = "none",
) -> AcrossTasksCI:
    """Mean and IQM over tasks of the per-task paired effects, with stratified bootstrap
    percentile intervals (Agarwal et al. 2021).

    ``per_task``: a mapping task name → ``(against, arm)`` (or a sequence of such pairs), two
    equal-length arrays of per-seed scores, pair i being seed i; tasks may have different
    numbers of seeds (at least 2). A task's effect is ``mean(arm - against) / scale`` with
    ``normalise``:

    * ``"none"``: scale 1, the raw difference in the metric's units (only meaningful when the
      tasks share a scale);
    * ``"baseline"``: ``|mean(against)|``, the relative improvement over the baseline (0.05 =
      5% better), for positive metrics whose zero means something;
    * ``"sd"``: ``sd(against)`` (``ddof=1``), the effect in units of the baseline's
      seed-to-seed spread on that task (a standardised effect, like Glass's delta).

    The scale is computed once per task from all its seeds and held fixed across resamples, as
    the fixed reference scores of human-normalised scores are: a resampled sd of few seeds is 0
    whenever every draw picks the same seed. Each resample draws seeds with replacement within
    each task (stratified; the same draw for both arms, so paired), recomputes every task's
    effect, then their mean and their :func:`iqm` over tasks; the intervals are the
    percentile intervals of those. ``rng``: Generator, int seed or ``None`` (seeded with 0).
    """
    tasks = _task_pairs(per_task)
    confidence = check_confidence(confidence)
    n_resamples = check_resamples(n_resamples, minimum=2)
    if normalise not in NORMALISATIONS:
        raise ValueError(
            f"normalise must be one of {', '.join(repr(n) for n in NORMALISATIONS)}, "
            f"got {normalise!r}"
        )
    gen = as_rng(rng)
    scales = [_scale(name, against, normalise) for name, against, _ in tasks]
    effects = np.array(
        [
            float((arm - against).mean()) / s
            for (_, against, arm), s in zip(tasks, scales, strict=True)
        ]
    )
    stars = np.empty((n_resamples, len(tasks)))
    for t, ((_, against, arm), s) in enumerate(zip(tasks, scales, strict=True)):
        stars[:, t] = bootstrap_means(arm - against, n_resamples, gen) / s
    tail = (1.0 - confidence) / 2.0
    mean_star = stars.mean(axis=1)
    iqm_star = np.asarray(iqm(stars, axis=1))
    m_lo, m_hi = (float(q) for q in np.quantile(mean_star, [tail, 1.0 - tail]))
    i_lo, i_hi = (float(q) for q in np.quantile(iqm_star, [tail, 1.0 - tail]))
    return AcrossTasksCI(
        mean=float(effects.mean()),
        mean_low=m_lo,
        mean_high=m_hi,
        iqm=float(iqm(effects)),
        iqm_low=i_lo,
        iqm_high=i_hi,
        effects=tuple(float(e) for e in effects),
        scales=tuple(scales),
        tasks=tuple(name for name, _, _ in tasks),
        seeds=tuple(len(against) for _, against, _ in tasks),
        normalise=normalise,
        confidence=confidence,
        n_resamples=n_resamples,
    )


# -- performance profiles -------------------------------------------------------------------------
@dataclass(frozen=True)
class PerformanceProfile(Result):
    """Result of :func:`performance_profile`: ``fractions[j][i]`` is the share of tasks on which
    arm ``names[j]`` is within ``taus[i]`` of the best; ``ratios[p][j]`` is arm j's
    performance ratio (or gap) on task p."""

    names: tuple[str, ...]
    taus: tuple[float, ...]
    fractions: tuple[tuple[float, ...], ...]
    ratios: tuple[tuple[float, ...], ...]
    measure: str
    n_tasks: int


def performance_profile(
    scores: Any,
    names: Sequence[str] | None = None,
    taus: Sequence[float] | None = None,
    *,
    measure: str = "ratio",
) -> PerformanceProfile:
    """Performance profiles of the arms over the tasks (Dolan & Moré 2002), data for a figure.

    Dolan and Moré define them for costs (lower is better) through the ratio
    ``cost / best cost``; for scores where higher is better this uses ``measure``:

    * ``"ratio"`` (default): ``r = best score / score`` on each task, so ``r = 1`` for the
      best arm and ``r <= tau`` means the score is at least ``best / tau``. Needs every score
      to be positive (accuracies, AUCs, returns above zero).
    * ``"gap"``: ``r = best score - score`` in the metric's units (``tau >= 0``), for scores
      that may be zero or negative.

    ``fractions[j][i] = #{tasks : r[task, j] <= taus[i]} / #tasks``: at the smallest tau (1,
    or 0 for gaps) the share of tasks on which the arm is best (ties count for each tied
    arm); as tau grows, how close to the best it stays. ``scores`` as :func:`friedman` (one
    task is enough). ``taus``: the points to evaluate, sorted on output; by default every
    distinct value of ``r``, where the profiles step, so a step plot through them is exact.
    """
    x, out_names = _score_matrix(scores, names, min_tasks=1)
    if measure not in PROFILE_MEASURES:
        raise ValueError(f"measure must be 'ratio' or 'gap', got {measure!r}")
    best = x.max(axis=1, keepdims=True)
    if measure == "ratio":
        if np.any(x <= 0.0):
            raise ValueError(
                "performance_profile with measure='ratio' needs positive scores (best/score); "
                "use measure='gap' for scores that can be zero or negative"
            )
        r = best / x
        floor = 1.0
    else:
        r = best - x
        floor = 0.0
    if taus is None:
        grid = np.unique(np.concatenate(([floor], r.ravel())))
    else:
        grid = np.unique(as_sample(taus, "taus", min_n=1))
        if grid[0] < floor:
            raise ValueError(
                f"taus must be at least {floor:g} for measure={measure!r}, got {grid[0]:g}"
            )
    fractions = (r[:, :, None] <= grid[None, None, :]).mean(axis=0)
    return PerformanceProfile(
        names=out_names,
        taus=tuple(float(t) for t in grid),
        fractions=tuple(tuple(float(f) for f in row) for row in fractions),
        ratios=tuple(tuple(float(v) for v in row) for row in r),
        measure=measure,
        n_tasks=x.shape[0],
    )
