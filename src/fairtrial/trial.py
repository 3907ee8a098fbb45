"""One attempt of one trial, as data: what a backend is given and what it reports back.

The runner makes a :class:`TrialJob` for each trial it claims, a backend runs it where it runs
trials (usually through :func:`fairtrial.execute.execute_trial`) and reports a
:class:`TrialOutcome`. Both are plain, picklable records: they cross process and machine
boundaries. Importable from :mod:`fairtrial.backends` as well, the seam that exchanges them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fairtrial.record import OutcomeStatus

#: how an attempt ended (:data:`fairtrial.record.OutcomeStatus`)
Status = OutcomeStatus


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one attempt of one trial (picklable)."""

    trial_id: str
    experiment_id: str
    arm: str
    seed: int
    attempt: int
    config: dict[str, Any]
    root_seed: int
    task: str
    task_checksum: str
    metric: str
    recipe: str | None = None
    command: str | None = None
    base_dir: str | None = None
    workdir: str | None = None
    data_cache: str | None = None
    time_limit: float | None = None
    threads: int | None = None
    #: time-to-target: the experiment's target, the logged metric checked, and its direction
    target: float | None = None
    target_metric: str | None = None
    direction: str = "max"
    #: measure compute (see fairtrial.meter); FAIRTRIAL_METER=0 in the worker also turns it off
    meter: bool = True
    #: what the trial asks of a cluster: {"cpus": 1, "gpus": 0.5} (the Ray backend uses it)
    resources: dict[str, float] = field(default_factory=dict)
    #: a tuning trial: the logged validation metric whose best value is its result (the test
    #: split is never scored), and whether higher or lower is better
    objective: str | None = None
    objective_direction: str = "max"
    #: the cluster job an earlier run submitted for this very attempt and left running
    #: (fairtrial.ledger.jobs): the backend collects it instead of running the trial again
    handle: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrialOutcome:
    status: Status
    result: float | None = None
    error: str | None = None
    error_detail: str | None = None
    wall_time: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    #: the trial's compute record (fairtrial.meter.Meter.record); {} when the worker was lost
    compute: dict[str, Any] = field(default_factory=dict)
    #: the config keys the recipe read, dotted (fairtrial.configreads); None when not recorded
    #: (a recipe with a config class is checked against it when the spec loads)
    config_read: tuple[str, ...] | None = None


#: the reason every backend records for a trial a stopped run was running
INTERRUPTED = "the run was interrupted"


def interrupted(wall_time: float = 0.0) -> TrialOutcome:
    """The outcome of a trial that a stopped run was running (a later run resumes it)."""
    return TrialOutcome("interrupted", error=INTERRUPTED, wall_time=wall_time)
