"""Per-seed results from elsewhere, as one typed table: :class:`ImportedResults`.

Every importer (a CSV file, MLflow, W&B, TensorBoard) ends here: rows of (task, arm, seed,
value) and a description of where they came from. The trackers' runs go through one pure
function, :func:`from_runs`, that maps each logged run (its params and the metric's history)
to a row: an arm is named by its params without the seed (``lr=0.1,norm=layer``), the value
is the metric's last or best logged value. The checks that every importer shares (one value
per task, arm and seed; the baseline among the arms) are here too, each a one-line
:class:`~fairtrial.errors.ImportedDataError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fairtrial.errors import ImportedDataError

#: what every imported analysis says about its results
NOTE = "not run by fairtrial — pairing, seeds and evaluation are as declared by the data"
#: the task of rows that name none
NO_TASK = "unnamed"
ValueRule = Literal["last", "best"]


@dataclass(frozen=True)
class Row:
    """One arm's result on one seed of one task."""

    task: str
    arm: str
    seed: int
    value: float
    #: where the row came from, for messages: ``row 4``, ``run 3f2a… (name)``, a folder
    where: str = ""
    #: the arm's settings as the source gave them (a tracker's params), recorded with its trial
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportedResults:
    """Per-seed results of several arms, as some other tool produced them.

    ``source``: where they were read (a file, ``mlflow:NAME (URI)``, a folder); ``name``: a
    name for the experiment (the file's stem, the tracker's experiment); ``value``: which of
    a logged history each value is (``"last logged value of 'acc'"``), None for values given
    as such; ``skipped``: runs left out and why, said in the report.
    """

    rows: tuple[Row, ...]
    source: str
    name: str
    metric: str
    value: str | None = None
    skipped: tuple[str, ...] = ()

    @property
    def tasks(self) -> list[str]:
        """The tasks, sorted."""
        return sorted({r.task for r in self.rows})

    @property
    def arms(self) -> list[str]:
        """The arms, sorted."""
        return sorted({r.arm for r in self.rows})

    def for_task(self, task: str) -> ImportedResults:
        """The rows of one task."""
        return replace(self, rows=tuple(r for r in self.rows if r.task == task))

    def check(self, baseline: str) -> None:
        """One value per (task, arm, seed), two arms or more, and ``baseline`` among the arms
        of every task; else an :class:`ImportedDataError` naming the rows or the arms."""
        seen: dict[tuple[str, str, int], Row] = {}
        for r in self.rows:
            key = (r.task, r.arm, r.seed)
            if key in seen:
                task = f"task {r.task}, " if r.task != NO_TASK else ""
                raise ImportedDataError(
                    f"{self.source}, {r.where}: a second value for ({task}arm {r.arm}, seed "
                    f"{r.seed}); {seen[key].where} has the first: each arm has one value per "
                    "seed (and task)"
                )
            seen[key] = r
        if not self.rows:
            raise ImportedDataError(f"{self.source}: no results to analyse")
        for task in self.tasks:
            arms = self.for_task(task).arms
            where = f"{self.source}" + (f", task {task}" if task != NO_TASK else "")
            if baseline not in arms:
                raise ImportedDataError(
                    f"{where}: no arm '{baseline}' to be the baseline; --baseline is one of "
                    f"{_listed(arms)}"
                )
            if len(arms) < 2:
                raise ImportedDataError(
                    f"{where}: only the arm '{baseline}': a verdict needs a second arm"
                )


def value_of(history: Sequence[tuple[float, float]], rule: ValueRule, direction: str) -> float:
    """The value of a logged history of ``(step, value)`` points: the last step's (the last
    logged of equal steps), or the best in ``direction``."""
    if rule == "last":
        return float(sorted(enumerate(history), key=lambda p: (p[1][0], p[0]))[-1][1][1])
    values = [v for _, v in history]
    return float(max(values) if direction == "max" else min(values))


def value_words(metric: str, rule: ValueRule, direction: str) -> str:
    """How the values were taken from the histories, for the report."""
    if rule == "last":
        return f"value: the last logged value of '{metric}'"
    best = "highest" if direction == "max" else "lowest"
    return f"value: the best ({best}) logged value of '{metric}'"


@dataclass(frozen=True)
class LoggedRun:
    """One run of a tracker: its params (config) and the metric's history.

    ``history``: (step, value) points of the metric, in any order. ``arm``: the arm when the
    source names it otherwise than by params (a TensorBoard folder); ``where``: how to find
    the run in a message (its id and name, its folder).
    """

    where: str
    params: Mapping[str, Any]
    history: Sequence[tuple[float, float]]
    arm: str | None = None


def from_runs(
    runs: Sequence[LoggedRun],
    *,
    source: str,
    name: str,
    metric: str,
    seed_param: str = "seed",
    arm_params: Sequence[str] = (),
    task_param: str | None = None,
    value: ValueRule = "last",
    direction: str = "max",
) -> ImportedResults:
    """The rows of a tracker's runs (pure: MLflow, W&B and TensorBoard all come through here).

    Each run's seed is its ``seed_param`` (an integer); its arm, the params other than the
    seed (and the task), or only ``arm_params``, as ``k=v`` joined by commas, keys sorted
    unless ``arm_params`` gives their order; its task, the ``task_param`` when given. A run
    that never logged ``metric`` is skipped (and said in the report); a non-finite value is
    an error naming the run.
    """
    rows: list[Row] = []
    skipped = 0
    for run in runs:
        params = {str(k): v for k, v in run.params.items()}
        if not run.history:
            skipped += 1
            continue
        if seed_param not in params:
            raise ImportedDataError(
                f"{source}, {run.where}: no param '{seed_param}' (its params: "
                f"{_listed(sorted(params)) or 'none'}); name the seed's param with --seed-param"
            )
        seed = _seed(params[seed_param], f"{source}, {run.where}, param '{seed_param}'")
        task = NO_TASK
        if task_param is not None:
            if task_param not in params:
                raise ImportedDataError(
                    f"{source}, {run.where}: no param '{task_param}' (--task-param); its "
                    f"params: {_listed(sorted(params)) or 'none'}"
                )
            task = str(params[task_param])
        arm, settings = _arm(run, params, seed_param, task_param, arm_params, source)
        v = value_of(run.history, value, direction)
        if not math.isfinite(v):
            raise ImportedDataError(
                f"{source}, {run.where}: the {value} value of '{metric}' is {v}: a finite "
                "number is needed (a diverged run: leave it out, or log a finite score)"
            )
        rows.append(Row(task, arm, seed, v, run.where, settings))
    if not rows:
        raise ImportedDataError(
            f"{source}: no run logged the metric '{metric}' ({len(runs)} run(s) read); "
            "--metric names the metric"
        )
    note = (f"{skipped} run(s) without '{metric}' left out",) if skipped else ()
    return ImportedResults(
        rows=tuple(rows),
        source=source,
        name=name,
        metric=metric,
        value=value_words(metric, value, direction),
        skipped=note,
    )


def _arm(
    run: LoggedRun,
    params: Mapping[str, Any],
    seed_param: str,
    task_param: str | None,
    arm_params: Sequence[str],
    source: str,
) -> tuple[str, dict[str, Any]]:
    if run.arm is not None:
        return run.arm, {}
    if arm_params:
        missing = [p for p in arm_params if p not in params]
        if missing:
            raise ImportedDataError(
                f"{source}, {run.where}: no param '{missing[0]}' (--arm-param); its params: "
                f"{_listed(sorted(params)) or 'none'}"
            )
        keys = list(arm_params)
    else:
        keys = sorted(k for k in params if k not in (seed_param, task_param))
    settings = {k: params[k] for k in keys}
    return ",".join(f"{k}={params[k]}" for k in keys) or "(no params)", settings


def _seed(raw: Any, where: str) -> int:
    """A seed as an integer (``3``, ``"3"``, ``3.0``); else an error naming ``where``."""
    text = str(raw).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ImportedDataError(f"{where}: '{_clip(text)}' is not a seed: an integer is needed")
    return int(number)


def _clip(text: str, limit: int = 40) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(names: Sequence[str], most: int = 20) -> str:
    """``a, b, c`` for a message; the first ``most`` and a count of the rest."""
    rest = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(_clip(n) for n in names[:most]) + rest
