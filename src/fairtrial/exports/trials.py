"""What an export says of each trial, whatever the tracker: its params, its points with
integer steps, its arm's verdict, and the report files.

Pure over the ledger and the analysis (no tracker is imported here): the MLflow export, the
live MLflow mirror and the W&B export all name things the same way, so that a run exported
one way and mirrored the other are the same run. A trial's params are the arm's config
(dotted keys) and fairtrial's own: ``arm``, ``seed`` (the seed index the arms are paired on)
and ``seed_<stream>`` (the seed each stream drew from, as a command's placeholders name
them); ``task`` too over several tasks. ``fairtrial analyze mlflow:NAME --arm-param arm``
reads them back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fairtrial.dotted import flatten
from fairtrial.record import ENDED

if TYPE_CHECKING:
    from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
    from fairtrial.results import Analysis

#: a trial's ledger status -> the run status trackers know (MLflow's names)
RUN_STATUS = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "diverged": "FAILED",
    "lost": "FAILED",
    "interrupted": "KILLED",
}
#: the trials an export sends: those that ended (pending, running and interrupted ones wait)
EXPORTED = ENDED
#: the params fairtrial adds to the arm's config (a config key of the same name becomes
#: ``config.<key>``)
OWN = ("arm", "seed", "task")
SEED_PREFIX = "seed_"
#: tag (MLflow) and key names: fairtrial's own, apart from the tracker's
TAG = "fairtrial."


@dataclass(frozen=True)
class Unit:
    """The trials of one experiment that an export sends together: a plain experiment, or one
    task's experiment of an experiment over several tasks (``task`` names it)."""

    experiment_id: str
    #: the metric compared: each trial's result is logged under its name
    metric: str
    task: str | None = None
    #: arm -> (verdict, the arm it is against); the baseline -> ("baseline", "")
    verdicts: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def params_of(
    config: Mapping[str, Any],
    arm: str,
    seed: int,
    seeds: Mapping[str, int],
    task: str | None = None,
) -> dict[str, Any]:
    """A trial's params, values as they are: the arm's config (dotted keys), then ``arm``,
    ``seed``, ``seed_<stream>`` for each stream, and ``task`` over several tasks."""
    own: dict[str, Any] = {"arm": arm, "seed": int(seed)}
    own.update({f"{SEED_PREFIX}{name}": int(v) for name, v in sorted(seeds.items())})
    if task is not None:
        own["task"] = task
    out: dict[str, Any] = {}
    for key, value in flatten(config).items():
        clash = key in own or key.startswith(SEED_PREFIX) or key.startswith("config.")
        out[f"config.{key}" if clash else key] = value
    out.update(own)
    return out


def param_text(value: Any) -> str:
    """A param's value as text: strings as they are, anything else as JSON (``0.1``,
    ``true``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def with_steps(
    rows: Iterable[tuple[Any, ...]], counters: dict[str, int]
) -> list[tuple[int, float, str, float]]:
    """``(step, t, name, value)`` points with integer steps: a point logged without a step
    gets the number of points of that metric logged without one before it (``counters``
    holds the counts, so a trial's points can come in several batches)."""
    out = []
    for step, t, name, value in rows:
        if step is None:
            step = counters.get(name, 0)
            counters[name] = step + 1
        out.append((int(step), float(t or 0.0), str(name), _number(value)))
    return out


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def verdicts_of(doc: Analysis) -> dict[str, tuple[str, str]]:
    """arm -> (its verdict, the arm it is against) of every arm compared with the baseline;
    the baseline's is ``("baseline", "")``."""
    out: dict[str, tuple[str, str]] = {}
    for c in doc.comparisons:
        out.setdefault(c.against, ("baseline", ""))
        out[c.arm] = (c.verdict or "none", c.against)
    return out


def units_of(ledger: Ledger, exp: ExperimentRow, doc: Analysis) -> list[Unit]:
    """The units of ``exp`` (its own trials, or each task's over several tasks) with the
    verdicts of ``doc`` (its analysis)."""
    children = exp.spec.get("children") or {}
    if not children:
        return [Unit(exp.id, exp.metric, None, verdicts_of(doc))]
    per_task = doc.tasks or {}
    out = []
    for task in exp.spec.get("tasks") or children:
        child = ledger.experiment(children[task])
        sub = per_task.get(task)
        out.append(Unit(child.id, child.metric, task, verdicts_of(sub) if sub else {}))
    return out


def exported_trials(ledger: Ledger, unit: Unit) -> tuple[list[TrialRow], int]:
    """The trials of ``unit`` an export sends (those that ended), and how many wait."""
    trials = ledger.trials(unit.experiment_id)
    ended = [t for t in trials if t.status in EXPORTED]
    return ended, len(trials) - len(ended)


def points_of(ledger: Ledger, trial: TrialRow) -> list[tuple[int, float, str, float]]:
    """The points the trial's latest attempt logged, with integer steps (:func:`with_steps`)."""
    rows = [r[1:] for r in ledger.metrics(trial.id, trial.attempt)]
    return with_steps(rows, {})


def last_step(points: Iterable[tuple[int, float, str, float]]) -> int:
    """The last step of a trial's points (0 without any): where its result is logged, so that
    the result is the last point of the metric's series."""
    return max((p[0] for p in points), default=0)


def run_name(arm: str, seed: int, task: str | None = None) -> str:
    """``arm seed N`` (``task/arm seed N`` over several tasks)."""
    return f"{task}/{arm} seed {seed}" if task else f"{arm} seed {seed}"


def report_files(ledger: Ledger, exp: ExperimentRow, doc: Analysis) -> dict[str, str]:
    """The report as Markdown and HTML (with its learning curves) and the results as JSON,
    as ``fairtrial report --format md|html|json`` writes them: file name -> text."""
    from fairtrial import report
    from fairtrial.analysis import learning_curves

    extras = {} if exp.spec.get("children") else {"curves": learning_curves(ledger, exp)}
    return {
        "report.md": report.render_md(doc),
        "report.html": report.render_html(doc, extras),
        "results.json": report.render_json(doc),
    }


@dataclass
class Exported:
    """What an export did, said in one line by :meth:`line`."""

    #: what the experiment went to: "MLflow experiment 'x' at URI", "W&B offline runs in DIR"
    target: str
    experiment: str
    #: trial runs made now, already there (left as they were), and replaced (runs an
    #: interrupted export or mirror left unfinished)
    made: int = 0
    already: int = 0
    replaced: int = 0
    #: trials not ended yet (pending, running, interrupted): a later export sends them
    waiting: int = 0
    points: int = 0
    seconds: float = 0.0
    #: where the report went ("report in run ID"), or what to do next (``wandb sync ...``)
    then: str = ""

    def line(self) -> str:
        done = f"{self.made} trial run(s) made"
        if self.already:
            done += f", {self.already} already there"
        if self.replaced:
            done += f" ({self.replaced} unfinished one(s) replaced)"
        wait = (
            f"; {self.waiting} trial(s) not ended yet are left for a later export"
            if (self.waiting)
            else ""
        )
        then = f"; {self.then}" if self.then else ""
        return (
            f"exported '{self.experiment}' to {self.target} in {self.seconds:.1f} s: {done} "
            f"({self.points} points){wait}{then}"
        )
