"""Scoring configurations and choosing each arm's best: one function for the driver (which
configuration the arm's compared seeds run) and the analysis (which one the report names)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fairtrial.tuning.records import TuningTrial

#: statuses of a trial that has not ended
UNENDED = ("pending", "running", "interrupted")


def configurations(rows: Sequence[tuple[Any, Mapping[str, Any]]], seeds: int) -> list[TuningTrial]:
    """One arm's tuning trials (``(TrialRow, params)``, any order; slot seed = configuration
    index × ``seeds`` + tuning seed), as its configurations in the order they were asked.

    A configuration is ``finished`` when each of its tuning seeds finished, its score the mean
    of their results; ``pending`` while any has not ended; else the first failure's status
    (``failed`` or ``diverged``) and reason."""
    by_index: dict[int, list[tuple[Any, Mapping[str, Any]]]] = {}
    for row, params in rows:
        by_index.setdefault(row.seed // seeds, []).append((row, params))
    out = []
    for index in sorted(by_index):
        group = sorted(by_index[index], key=lambda rp: rp[0].seed)
        trials = [r for r, _ in group]
        params = dict(group[0][1])
        done = [t for t in trials if t.status == "finished" and t.result is not None]
        bad = next((t for t in trials if t.status not in UNENDED and t not in done), None)
        if bad is not None:
            status, score, error = bad.status, None, bad.error
        elif len(done) == seeds:
            status, score, error = "finished", math.fsum(t.result for t in done) / seeds, None
        else:
            status, score, error = "pending", None, None
        out.append(TuningTrial(index=index, params=params, status=status, score=score,
                               seeds=len(done), error=error))  # fmt: skip
    return out


def best(configs: Sequence[TuningTrial], direction: str) -> TuningTrial | None:
    """The finished configuration with the best score; ties go to the earliest asked."""
    k = -1.0 if direction == "min" else 1.0
    top: TuningTrial | None = None
    for c in sorted(configs, key=lambda c: c.index):
        if c.status != "finished" or c.score is None:
            continue
        if top is None or k * c.score > k * (top.score or 0.0):
            top = c
    return top
