"""fairtrial: a fair trial for every ML idea.

Paired multi-seed experiments from a spec file, stored in a ledger, with per-seed results
that a report turns into comparisons. The names below are the public API; everything else
is an implementation detail that may change. In a notebook: ``fairtrial.run(spec)`` then
``fairtrial.analyze(experiment)``, an :class:`Analysis` that shows its verdict table.
"""

from fairtrial._version import __version__ as __version__
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
