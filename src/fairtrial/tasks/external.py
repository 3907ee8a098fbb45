"""``task = "external:NAME"``: a task whose data fairtrial never holds, evaluated by the recipe.

Some training code evaluates itself on data fairtrial cannot hold (image folders, tokenised
corpora). Such an experiment names its task ``external:NAME`` and sets ``metric`` and
``direction`` in its spec; the recipe reports its own test score (``ctx.report_test(NAME=v)``,
or a ``{"test": {...}}`` line from a command). Pairing, seeds, metering, the ledger and the
statistics are the same as for any task, and the reported score is recorded in the sealed test
log, so the log still counts the looks at the test split. But fairtrial neither sees the test
labels nor scores predictions: every result document and report says so
(:data:`RECIPE_EVALUATION`), and nothing can be re-scored.

:class:`ExternalTask` is a :class:`~fairtrial.tasks.Task` with no data. Its checksum is derived
from its name alone: experiments on the same external data with different metrics looked at
the same test split, and the test log counts them together (the metric is part of every
trial's identity already).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fairtrial.errors import TaskError
from fairtrial.tasks.base import Direction, Task, TaskData

#: the prefix of an external task's reference
PREFIX = "external:"
#: how the test evaluation of an external task's trials was made (results, test log, registry)
EVALUATION = "recipe"
#: what the reports say of it, in plain words
RECIPE_EVALUATION = (
    "evaluated by the recipe, not sealed: the recipe computed its own test score on data "
    "fairtrial never held, so fairtrial saw no test labels or predictions and cannot re-score "
    "the results; the sealed test log records the reported scores and counts the looks"
)


def is_external(ref: object) -> bool:
    """Whether ``ref`` names an external task (``external:NAME``)."""
    return isinstance(ref, str) and ref.startswith(PREFIX)


def _empty() -> NDArray[np.int64]:
    out = np.empty(0, dtype=np.int64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class ExternalTask(Task):
    """A task fairtrial holds no data of: the recipe loads, trains on and evaluates its own.

    ``metric`` is empty: an external task has no metric of its own; the spec names it (and
    whether higher or lower is better), and the recipe reports it.
    """

    def __post_init__(self) -> None:  # no data, no metric to check
        pass

    @classmethod
    def named(cls, ref: str) -> ExternalTask:
        """The external task ``ref`` (``external:NAME``)."""
        if not is_external(ref):
            raise TaskError(f"task '{ref[:120]}' is not of the form 'external:NAME'")
        # the name is checked with the spec (fairtrial.spec.refs); here it is only a label
        return cls(
            name=ref,
            x=_empty(),
            y=_empty(),
            train_idx=_empty(),
            val_idx=_empty(),
            test_idx=_empty(),
            metric="",
            kind="external",
            description="data the recipe loads itself; the recipe evaluates itself",
            source="the recipe's own data (not held by fairtrial)",
        )

    @property
    def direction(self) -> Direction:
        raise TaskError(
            f"task '{self.name}' is evaluated by the recipe: whether higher or lower is better "
            "is the spec's [experiment] direction"
        )

    @cached_property
    def n_classes(self) -> int | None:
        return None

    @cached_property
    def checksum(self) -> str:
        """sha256 of the reference: fairtrial holds no data to hash."""
        return hashlib.sha256(f"fairtrial external task\0{self.name}".encode()).hexdigest()

    @cached_property
    def _data(self) -> TaskData:
        return TaskData(
            x_train=_empty(),
            y_train=_empty(),
            x_val=_empty(),
            y_val=_empty(),
            x_test=_empty(),
            n_classes=None,
            meta={"external": True},
        )

    def score(self, predictions: NDArray[Any] | list[Any], metric: str | None = None) -> float:
        raise TaskError(
            f"task '{self.name}' is evaluated by the recipe: fairtrial holds no test labels to "
            "score predictions against (the recipe reports its score with ctx.report_test)"
        )
