"""What a task is: data, fixed checksummed splits, a metric with a direction, sealed test labels.

A recipe receives :class:`TaskData`, which has no test labels. fairtrial keeps the labels in the
:class:`Task` and scores predictions itself (:meth:`Task.score`), so no recipe computes its own
test score.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fairtrial.errors import TaskError

#: "environment": a Gymnasium environment fairtrial evaluates policies on (fairtrial.tasks.env);
#: "external": data the recipe holds and evaluates itself (fairtrial.tasks.external)
Kind = Literal["classification", "regression", "environment", "external"]
Direction = Literal["max", "min"]


def _accuracy(y: NDArray[Any], p: NDArray[Any]) -> float:
    return float(np.mean(y == p))


def _balanced_accuracy(y: NDArray[Any], p: NDArray[Any]) -> float:
    recalls = [np.mean(p[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls))


def _macro_f1(y: NDArray[Any], p: NDArray[Any]) -> float:
    scores = []
    for c in np.unique(np.concatenate([y, p])):
        tp = np.sum((p == c) & (y == c))
        denom = np.sum(p == c) + np.sum(y == c)
        scores.append(0.0 if denom == 0 else 2.0 * tp / denom)
    return float(np.mean(scores))


def _mse(y: NDArray[Any], p: NDArray[Any]) -> float:
    return float(np.mean((y.astype(float) - p.astype(float)) ** 2))


def _mae(y: NDArray[Any], p: NDArray[Any]) -> float:
    return float(np.mean(np.abs(y.astype(float) - p.astype(float))))


def _r2(y: NDArray[Any], p: NDArray[Any]) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot. With constant targets (SS_tot = 0)
    it is 1.0 for exact predictions and 0.0 otherwise, as scikit-learn's ``r2_score``: never
    NaN or infinite, which no comparison of arms could use."""
    y, p = y.astype(float), p.astype(float)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def _mean_return(y: NDArray[Any], p: NDArray[Any]) -> float:
    """The mean of the episodes' returns, ``p`` holding ``[return, length]`` per episode."""
    return float(np.asarray(p, dtype=float).reshape(-1, 2)[:, 0].mean())


@dataclass(frozen=True)
class Metric:
    """A test metric: its name, which direction is better, and the kinds of task it fits."""

    name: str
    direction: Direction
    kinds: tuple[Kind, ...]
    fn: Callable[[NDArray[Any], NDArray[Any]], float]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "max", ("classification",), _accuracy),
        Metric("balanced_accuracy", "max", ("classification",), _balanced_accuracy),
        Metric("macro_f1", "max", ("classification",), _macro_f1),
        Metric("mse", "min", ("regression",), _mse),
        Metric("mae", "min", ("regression",), _mae),
        Metric("r2", "max", ("regression",), _r2),
        # an environment task's: the mean return of its evaluation episodes (tasks/env.py)
        Metric("return", "max", ("environment",), _mean_return),
    )
}


def metrics_for(kind: Kind) -> list[str]:
    """Names of the metrics that fit a task kind, sorted."""
    return sorted(name for name, m in METRICS.items() if kind in m.kinds)


@dataclass(frozen=True)
class TaskData:
    """The splits a recipe sees. There is deliberately no ``y_test``.

    Arrays are read-only: a recipe that wants to modify its inputs copies them first, so one
    trial cannot change what the next trial in the same worker sees.
    """

    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_val: NDArray[Any]
    y_val: NDArray[Any]
    x_test: NDArray[Any]
    n_classes: int | None
    meta: Mapping[str, Any] = field(default_factory=dict)


def stratified_split(
    y: NDArray[Any], fractions: tuple[float, float, float], seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Split indices into train/val/test, per class in the given fractions, reproducibly.

    Each class is shuffled with a generator seeded by ``seed`` and cut by rounding the
    cumulative fractions, so every split holds each class in (nearly) the same proportion.
    For regression targets pass ``y`` binned into quantiles.
    """
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    rng = np.random.Generator(np.random.PCG64(seed))
    parts: list[list[NDArray[np.int64]]] = [[], [], []]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c).astype(np.int64)
        idx = idx[rng.permutation(len(idx))]
        a = round(len(idx) * fractions[0])
        b = a + round(len(idx) * fractions[1])
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            part.append(chunk)
    out = tuple(np.sort(np.concatenate(p)) for p in parts)
    return out[0], out[1], out[2]


@dataclass(frozen=True, eq=False)
class Task:
    """A dataset with fixed train/val/test splits, a primary metric and sealed test labels.

    Build one with :meth:`from_arrays` (fairtrial makes the stratified splits) or pass the split
    indices yourself. ``checksum`` covers the data, the labels and the split indices, and is
    recorded with every trial: two trials with the same checksum saw the same data.
    ``source`` says where the data come from and ``licence`` under which terms they may be
    used (both shown by ``fairtrial tasks``; neither is part of the checksum).
    """

    name: str
    x: NDArray[Any]
    y: NDArray[Any]
    train_idx: NDArray[np.int64]
    val_idx: NDArray[np.int64]
    test_idx: NDArray[np.int64]
    metric: str
    kind: Kind = "classification"
    description: str = ""
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    licence: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise TaskError(
                f"task '{self.name}': unknown metric '{self.metric}'; "
                f"valid: {', '.join(sorted(METRICS))}"
            )
        if self.kind not in METRICS[self.metric].kinds:
            raise TaskError(
                f"task '{self.name}': metric '{self.metric}' does not fit a {self.kind} task; "
                f"valid: {', '.join(metrics_for(self.kind))}"
            )
        if len(self.x) != len(self.y):
            raise TaskError(f"task '{self.name}': x has {len(self.x)} rows but y has {len(self.y)}")
        n = len(self.y)
        seen = np.concatenate([self.train_idx, self.val_idx, self.test_idx])
        if len(np.unique(seen)) != len(seen) or (len(seen) and (seen.min() < 0 or seen.max() >= n)):
            raise TaskError(f"task '{self.name}': split indices overlap or fall outside 0..{n - 1}")
        for arr in (self.x, self.y):
            arr.setflags(write=False)

    @classmethod
    def from_arrays(
        cls,
        name: str,
        x: NDArray[Any],
        y: NDArray[Any],
        *,
        metric: str = "accuracy",
        kind: Kind = "classification",
        fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
        split_seed: int = 0,
        description: str = "",
        source: str = "",
        meta: Mapping[str, Any] | None = None,
        licence: str = "",
    ) -> Task:
        """Make a task from arrays with stratified splits (quantile bins for regression)."""
        x = np.ascontiguousarray(x)
        y = np.ascontiguousarray(y)
        strata = y if kind == "classification" else _quantile_bins(y, 10)
        tr, va, te = stratified_split(strata, fractions, split_seed)
        return cls(
            name, x, y, tr, va, te, metric, kind, description, source, dict(meta or {}), licence
        )

    @property
    def direction(self) -> Direction:
        return METRICS[self.metric].direction

    @cached_property
    def n_classes(self) -> int | None:
        return len(np.unique(self.y)) if self.kind == "classification" else None

    @cached_property
    def checksum(self) -> str:
        """sha256 over the data, the labels and the split indices (dtype and shape included)."""
        h = hashlib.sha256()
        for arr in (self.x, self.y, self.train_idx, self.val_idx, self.test_idx):
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_idx), "val": len(self.val_idx), "test": len(self.test_idx)}

    @cached_property
    def _data(self) -> TaskData:
        def take(a: NDArray[Any], idx: NDArray[np.int64]) -> NDArray[Any]:
            out = a[idx]
            out.setflags(write=False)
            return out

        return TaskData(
            x_train=take(self.x, self.train_idx),
            y_train=take(self.y, self.train_idx),
            x_val=take(self.x, self.val_idx),
            y_val=take(self.y, self.val_idx),
            x_test=take(self.x, self.test_idx),
            n_classes=self.n_classes,
            meta=dict(self.meta),
        )

    def data(self) -> TaskData:
        """The splits a recipe may see: everything but the test labels."""
        return self._data

    def score(self, predictions: NDArray[Any] | list[Any], metric: str | None = None) -> float:
        """Score predictions for the test split, in test-index order, with the task's metric."""
        p = np.asarray(predictions)
        y_test = self.y[self.test_idx]
        if p.ndim > 1 and p.shape[1:] != y_test.shape[1:]:
            p = p.reshape(len(p), -1)
            if p.shape[1] == 1:
                p = p[:, 0]
        if p.shape[:1] != y_test.shape[:1]:
            raise TaskError(
                f"task '{self.name}': expected {len(y_test)} test predictions, got {len(p)}"
            )
        if p.shape != y_test.shape:
            # e.g. class scores instead of labels: comparing them would broadcast silently
            raise TaskError(
                f"task '{self.name}': predictions have shape {p.shape}, the test labels "
                f"{y_test.shape}; return one label per example (e.g. scores.argmax(1))"
            )
        return METRICS[metric or self.metric].fn(y_test, p)


def _quantile_bins(y: NDArray[Any], n: int) -> NDArray[np.int64]:
    edges = np.quantile(y, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, y).astype(np.int64)
