"""fairtrial: a fair trial for every ML idea.

Paired multi-seed experiments from a spec file, stored in a ledger, with per-seed results
that a report turns into comparisons. The names below are the public API; everything else
is an implementation detail that may change. In a notebook: ``fairtrial.run(spec)`` then
``fairtrial.analyze(experiment)``, an :class:`Analysis` that shows its verdict table.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fairtrial._version import __version__ as __version__

if TYPE_CHECKING:
    from fairtrial.analysis import Options
    from fairtrial.api import analyze, run
    from fairtrial.backends import Backend, InlineBackend, LocalBackend, TrialJob, TrialOutcome
    from fairtrial.context import TrialContext
    from fairtrial.errors import (
        ExperimentNotFound,
        FairtrialError,
        LedgerError,
        MissingDependency,
        RecipeError,
        SpecError,
        TaskError,
        TrialDiverged,
    )
    from fairtrial.ledger import Ledger
    from fairtrial.plan import TrialPlan, plan_trials
    from fairtrial.recipes import recipe
    from fairtrial.record import ExperimentRecord, Hypothesis
    from fairtrial.results import Ablation, Analysis, ArmSummary, Comparison, Interaction
    from fairtrial.runner import RunSummary, run_experiment
    from fairtrial.seeding import derive_seed
    from fairtrial.spec import Arm, Spec, load_spec, parse_spec
    from fairtrial.tasks import Task, TaskData, get_task, register_task

# Each public name is imported when first used, so that a process which needs only a part of
# fairtrial (a worker, a cluster job, ``fairtrial --help``) does not pay for all of it.
_WHERE = {
    "Options": "fairtrial.analysis",
    "analyze": "fairtrial.api",
    "run": "fairtrial.api",
    "Backend": "fairtrial.backends",
    "InlineBackend": "fairtrial.backends",
    "LocalBackend": "fairtrial.backends",
    "TrialJob": "fairtrial.backends",
    "TrialOutcome": "fairtrial.backends",
    "TrialContext": "fairtrial.context",
    "ExperimentNotFound": "fairtrial.errors",
    "FairtrialError": "fairtrial.errors",
    "LedgerError": "fairtrial.errors",
    "MissingDependency": "fairtrial.errors",
    "RecipeError": "fairtrial.errors",
    "SpecError": "fairtrial.errors",
    "TaskError": "fairtrial.errors",
    "TrialDiverged": "fairtrial.errors",
    "Ledger": "fairtrial.ledger",
    "TrialPlan": "fairtrial.plan",
    "plan_trials": "fairtrial.plan",
    "recipe": "fairtrial.recipes",
    "ExperimentRecord": "fairtrial.record",
    "Hypothesis": "fairtrial.record",
    "Ablation": "fairtrial.results",
    "Analysis": "fairtrial.results",
    "ArmSummary": "fairtrial.results",
    "Comparison": "fairtrial.results",
    "Interaction": "fairtrial.results",
    "RunSummary": "fairtrial.runner",
    "run_experiment": "fairtrial.runner",
    "derive_seed": "fairtrial.seeding",
    "Arm": "fairtrial.spec",
    "Spec": "fairtrial.spec",
    "load_spec": "fairtrial.spec",
    "parse_spec": "fairtrial.spec",
    "Task": "fairtrial.tasks",
    "TaskData": "fairtrial.tasks",
    "get_task": "fairtrial.tasks",
    "register_task": "fairtrial.tasks",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fairtrial' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "Ablation",
    "Analysis",
    "Arm",
    "ArmSummary",
    "Backend",
    "Comparison",
    "ExperimentNotFound",
    "ExperimentRecord",
    "FairtrialError",
    "Hypothesis",
    "InlineBackend",
    "Interaction",
    "Ledger",
    "LedgerError",
    "LocalBackend",
    "MissingDependency",
    "Options",
    "RecipeError",
    "RunSummary",
    "Spec",
    "SpecError",
    "Task",
    "TaskData",
    "TaskError",
    "TrialContext",
    "TrialDiverged",
    "TrialJob",
    "TrialOutcome",
    "TrialPlan",
    "analyze",
    "derive_seed",
    "get_task",
    "load_spec",
    "parse_spec",
    "plan_trials",
    "recipe",
    "register_task",
    "run",
    "run_experiment",
]
