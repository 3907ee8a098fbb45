"""What the figures and the predictions table show: learning curves across seeds, and the test
examples on which the arms disagree."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fairtrial.ledger import ExperimentRow, Ledger


def learning_curves(
    ledger: Ledger, exp: ExperimentRow, name: str | None = None, confidence: float = 0.95
) -> dict[str, Any]:
    """Per arm, the mean curve of metric ``name`` across seeds with a t-interval band.

    ``name`` defaults to ``val_<metric>`` (what the built-in recipes log each epoch), else the
    first metric any trial logged. Only the steps every finished seed of an arm logged are
    averaged, so the band never mixes different sets of seeds.
    """
    trials = [t for t in ledger.trials(exp.id) if t.status == "finished"]
    points = (
        (t.arm, t.seed, step, metric, value)
        for t in trials
        for _, step, _, metric, value in ledger.metrics(t.id, t.attempt)
    )
    return curves_from_points(points, exp, name, confidence)


def curves_from_points(
    points: Iterable[tuple[str, int, int | None, str, float]],
    exp: ExperimentRow,
    name: str | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """:func:`learning_curves` from ``(arm, seed, step, metric, value)`` points of finished
    trials (the ledger's, or a bundle's ``results/metrics.jsonl``)."""
    from scipy import stats as sps

    series: dict[str, dict[str, dict[int, dict[int, float]]]] = {}
    names: list[str] = []
    for arm, seed, step, metric, value in points:
        if metric not in names:
            names.append(metric)
        if step is not None and math.isfinite(value):
            series.setdefault(metric, {}).setdefault(arm, {}).setdefault(seed, {})[int(step)] = (
                float(value)
            )
    if name is None:
        wanted = [f"val_{exp.metric}", f"train_{exp.metric}"]
        name = next((n for n in [*wanted, *names] if n in series), None)
    out: dict[str, Any] = {"metric": name, "available": [n for n in names if n in series]}
    arms: dict[str, Any] = {}
    for arm, by_seed in (series.get(name, {}) if name else {}).items():
        steps = sorted(set.intersection(*(set(v) for v in by_seed.values())))
        if len(steps) < min(len(v) for v in by_seed.values()) / 2:
            # the seeds logged at steps of their own (e.g. episode ends counted in environment
            # steps): each seed's last value so far, on a common grid of steps
            steps, m = _on_grid(by_seed)
        else:
            m = np.array([[by_seed[s][st] for st in steps] for s in sorted(by_seed)], dtype=float)
        if not steps:
            continue
        mean = m.mean(axis=0)
        n = m.shape[0]
        if n > 1:
            half = sps.t.ppf(0.5 + confidence / 2, n - 1) * m.std(axis=0, ddof=1) / math.sqrt(n)
        else:
            half = np.zeros_like(mean)
        arms[arm] = {
            "steps": steps,
            "mean": mean.tolist(),
            "low": (mean - half).tolist(),
            "high": (mean + half).tolist(),
            "seeds": n,
        }
    out["arms"] = {a["name"]: arms[a["name"]] for a in exp.arms["arms"] if a["name"] in arms}
    return out


#: points of a curve put on a common grid
GRID_POINTS = 50


def _on_grid(by_seed: dict[int, dict[int, float]]) -> tuple[list[int], np.ndarray[Any, Any]]:
    """Each seed's series as a step function (its last value at or before each step) on a
    grid of :data:`GRID_POINTS` steps from the latest first step to the earliest last step of
    the seeds, so every grid point has a value of every seed."""
    start = max(min(v) for v in by_seed.values())
    end = min(max(v) for v in by_seed.values())
    if end < start:
        return [], np.zeros((0, 0))
    grid = sorted({int(x) for x in np.rint(np.linspace(start, end, GRID_POINTS))})
    rows = []
    for seed in sorted(by_seed):
        xs = np.array(sorted(by_seed[seed]), dtype=float)
        ys = np.array([by_seed[seed][int(x)] for x in xs], dtype=float)
        rows.append(ys[np.searchsorted(xs, grid, side="right") - 1])
    return grid, np.array(rows, dtype=float)


def disagreements(ledger: Ledger, exp: ExperimentRow, limit: int = 12) -> dict[str, Any] | None:
    """Test examples on which the arms' predictions differ (classification tasks).

    Each arm's prediction for an example is its most common label across its seeds, with the
    share of seeds that agree; the examples shown are those where the arms' labels differ,
    most contested first. Returns None when the task is not a classification task or no
    predictions were recorded.
    """
    from fairtrial.tasks import get_task

    base = None
    if exp.spec_path:
        from pathlib import Path

        base = Path(exp.spec_path).parent
    try:
        task = get_task(exp.task, base)
    except Exception:
        return None
    if task.kind != "classification":
        return None
    trials = {t.id: t for t in ledger.trials(exp.id) if t.status == "finished"}
    preds: dict[str, list[np.ndarray[Any, Any]]] = {}
    for ev in ledger.test_evaluations(exp.id):
        t = trials.get(ev["trial_id"])
        if t is None or ev["attempt"] != t.attempt:
            continue
        preds.setdefault(t.arm, []).append(np.asarray(ev["predictions"]))
    order = [a["name"] for a in exp.arms["arms"] if a["name"] in preds]
    return disagreement_table(preds, order, task, limit)


def majority_votes(
    preds: Mapping[str, Sequence[Any]], order: Sequence[str]
) -> dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """Per arm, each test example's most common label across seeds and the share that chose it.

    ``preds`` maps an arm to its seeds' prediction vectors (one label per test example).
    """
    votes: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
    for arm in order:
        m = np.stack([np.asarray(p) for p in preds[arm]])  # seeds × examples
        labels, inv = np.unique(m, return_inverse=True)
        inv = inv.reshape(m.shape)
        counts = np.stack([(inv == k).sum(axis=0) for k in range(len(labels))])
        top = counts.argmax(axis=0)
        votes[arm] = (labels[top], counts.max(axis=0) / m.shape[0])
    return votes


def disagreement_table(
    preds: Mapping[str, Sequence[Any]], order: Sequence[str], task: Any, limit: int = 12
) -> dict[str, Any] | None:
    """:func:`disagreements` from each arm's per-seed predictions and the task they scored."""
    if len(order) < 2:
        return None
    truth = task.y[task.test_idx]
    votes = majority_votes(preds, order)
    if any(len(votes[a][0]) != len(truth) for a in order):
        return None
    majority = np.stack([votes[a][0] for a in order])
    differ = np.flatnonzero((majority != majority[0]).any(axis=0))
    # most contested first: arms split on the label and the seeds agree least
    agreement = np.stack([votes[a][1] for a in order]).mean(axis=0)
    ranked = differ[np.lexsort((differ, agreement[differ]))]
    examples = [
        {
            "index": int(i),
            "truth": _plain(truth[i]),
            "arms": {
                a: {
                    "prediction": _plain(votes[a][0][i]),
                    "agreement": round(float(votes[a][1][i]), 3),
                }
                for a in order
            },
        }
        for i in ranked[:limit]
    ]
    correct = {a: round(float(np.mean(votes[a][0] == truth)), 6) for a in order}
    return {
        "n_test": len(truth),
        "n_disagree": len(differ),
        "seeds": {a: len(preds[a]) for a in order},
        "majority_vote_accuracy": correct,
        "examples": examples,
        "inputs": {str(e["index"]): task.x[task.test_idx[e["index"]]].tolist() for e in examples},
        "input": input_shape(task),
    }


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def input_shape(task: Any) -> dict[str, Any] | None:
    """How to draw an input: an image, a 1-D signal, a few numbers as text, or not at all."""
    if task.meta.get("image_shape"):
        return {"kind": "image", "shape": [int(v) for v in task.meta["image_shape"]]}
    if task.meta.get("seq_length"):
        return {"kind": "signal", "length": int(task.meta["seq_length"])}
    if task.x.ndim == 2 and task.x.shape[1] <= 8:
        return {"kind": "values"}
    return None
