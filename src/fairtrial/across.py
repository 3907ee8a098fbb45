"""The across-task part of the result document (``Analysis.across``), as typed records: one
claim judged over several tasks, with the same verdict words as a comparison on one task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fairtrial.typed import Interval, Record


@dataclass(frozen=True)
class TaskEffect(Record):
    """One task's part in an across-task comparison."""

    task: str = ""
    effect: float | None = field(default=None, metadata={"doc": "mean paired difference"})
    interval: Interval | None = None
    n_pairs: int = 0
    verdict: str | None = field(default=None, metadata={"doc": "the verdict on this task"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class AcrossComparison(Record):
    """An arm against another over every task: Wilcoxon signed-rank on the per-task effects,
    the sign test alongside, an aggregate effect with a stratified bootstrap interval."""

    arm: str = ""
    against: str = "baseline"
    n_tasks: int = 0
    tasks: list[TaskEffect] = field(default_factory=list)
    wins: int = field(default=0, metadata={"doc": "tasks where the arm is better"})
    ties: int = field(default=0, metadata={"doc": "tasks where it is equivalent or inconclusive"})
    losses: int = field(default=0, metadata={"doc": "tasks where the arm is worse"})
    wilcoxon: dict[str, Any] | None = field(
        default=None, metadata={"doc": "signed-rank test on the per-task effects"}
    )
    sign_test: dict[str, Any] | None = None
    aggregate: dict[str, Any] | None = field(
        default=None, metadata={"doc": "mean and IQM of the per-task effects, with intervals"}
    )
    p_adjusted: float | None = field(default=None, metadata={"doc": "Holm over the arms"})
    verdict: str | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class AcrossTasks(Record):
    """Every comparison judged over the experiment's tasks."""

    tasks: list[str] = field(default_factory=list)
    suite: str | None = None
    comparisons: list[AcrossComparison] = field(default_factory=list)
    friedman: dict[str, Any] | None = field(
        default=None, metadata={"doc": "with three or more arms: Friedman, average ranks"}
    )
    pairwise: list[dict[str, Any]] = field(
        default_factory=list, metadata={"doc": "every pair's Wilcoxon with Holm's adjustment"}
    )
    cliques: list[list[str]] = field(
        default_factory=list, metadata={"doc": "arms not told apart (the diagram's bars)"}
    )
    notes: list[str] = field(default_factory=list, metadata={"doc": "what the reader must know"})
    method: str = field(default="", metadata={"doc": "the procedure in words"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
