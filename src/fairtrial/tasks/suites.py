"""Named suites of built-in tasks: one name for a set of tasks an idea is tried on together.

A claim that holds on one dataset may be that dataset's luck; a suite is a fixed, published
list of tasks of one kind and one metric, so that "across tasks" means the same tasks for
everybody who names the suite. Suites only name built-in tasks, each with its pinned checksum.
"""

from __future__ import annotations

from fairtrial.errors import TaskError

__all__ = ["SUITES", "SUITE_PREFIX", "resolve_suite"]

#: how a spec names a suite where it names a task: ``suite:NAME``
SUITE_PREFIX = "suite:"

#: suite name -> its built-in tasks, in a fixed order. Every task of a suite is a
#: classification task scored by accuracy, so results compare across its tasks.
SUITES: dict[str, tuple[str, ...]] = {
    # small tabular and image classification from scikit-learn's bundled files
    "small-classification": ("digits", "breast_cancer", "iris", "wine"),
    # univariate sequences, for models of order and shape (the cnn1d recipe trains on all)
    "time-series": ("gunpoint", "italy_power_demand", "mnist1d"),
    # hand-written digit images at two sizes (the cnn2d recipe trains on both)
    "images": ("digits", "mnist5k"),
}


def resolve_suite(name: str) -> tuple[str, ...]:
    """The task names of suite ``name`` (``suite:`` in front is allowed); TaskError naming the
    valid suites for an unknown one."""
    bare = name.removeprefix(SUITE_PREFIX)
    if bare not in SUITES:
        raise TaskError(f"unknown task suite '{bare}'; valid: {', '.join(sorted(SUITES))}")
    return SUITES[bare]
