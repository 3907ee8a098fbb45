"""The tuning part of the result document (``Analysis.tuning``), as typed records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fairtrial.typed import Record


@dataclass(frozen=True)
class TuningTrial(Record):
    """One configuration tried while tuning an arm."""

    index: int = field(default=0, metadata={"doc": "the order the sampler asked for it (from 0)"})
    params: dict[str, Any] = field(
        default_factory=dict, metadata={"doc": "the values it set, by dotted key"}
    )
    status: str = field(
        default="pending",
        metadata={"doc": "finished (every tuning seed finished), failed, diverged or pending"},
    )
    score: float | None = field(
        default=None,
        metadata={
            "doc": "the objective: the mean over its tuning seeds of each trial's best value"
        },
    )
    seeds: int = field(default=0, metadata={"doc": "tuning seeds that finished"})
    error: str | None = field(default=None, metadata={"doc": "why it failed, when it did"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TuningCurve(Record):
    """Expected best validation score after k configurations (Dodge et al. 2019)."""

    k: list[int] = field(default_factory=list, metadata={"doc": "configurations tried, 1..budget"})
    expected: list[float] = field(
        default_factory=list,
        metadata={"doc": "expected best score of k configurations drawn with replacement"},
    )
    without_replacement: list[float] = field(
        default_factory=list,
        metadata={"doc": "the same, k configurations drawn without replacement"},
    )
    low: list[float] = field(
        default_factory=list, metadata={"doc": "lower end of the interval of `expected`"}
    )
    high: list[float] = field(
        default_factory=list, metadata={"doc": "upper end of the interval of `expected`"}
    )
    interval_method: str = field(default="", metadata={"doc": "how the interval was computed"})
    failed_as: str | None = field(
        default=None, metadata={"doc": "how failed configurations enter the curve"}
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Importance(Record):
    """Which hyperparameters mattered, from an arm's tuning trials."""

    evaluator: str = field(default="", metadata={"doc": "the importance evaluator used"})
    values: dict[str, float] = field(
        default_factory=dict, metadata={"doc": "dotted key -> importance (they sum to 1)"}
    )
    note: str | None = field(default=None, metadata={"doc": "why it is missing or partial"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ArmTuning(Record):
    """How one arm was tuned and what it chose."""

    arm: str = ""
    space: dict[str, Any] = field(
        default_factory=dict, metadata={"doc": "dotted key -> its range or choices"}
    )
    trials: list[TuningTrial] = field(
        default_factory=list, metadata={"doc": "every configuration tried, in order"}
    )
    best: TuningTrial | None = field(
        default=None, metadata={"doc": "the best configuration (ties: the earliest)"}
    )
    config: dict[str, Any] | None = field(
        default=None, metadata={"doc": "the arm's config its evaluation seeds ran"}
    )
    starting_points: dict[str, Any] = field(
        default_factory=dict,
        metadata={"doc": "components of the arm that tuning also set: their spec values"},
    )
    curve: TuningCurve | None = None
    importance: Importance | None = None
    compute: dict[str, Any] | None = field(
        default=None,
        metadata={"doc": "the tuning trials' compute, summed (as an arm's compute figures)"},
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
