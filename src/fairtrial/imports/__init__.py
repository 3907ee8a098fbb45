"""Results from anywhere: per-seed results fairtrial did not run, read into one table and
given the same analysis as fairtrial's own experiments (``fairtrial analyze``).

* :mod:`~fairtrial.imports.table`: :class:`ImportedResults` (rows of task, arm, seed, value)
  and the pure mapping of a tracker's runs to rows (:func:`from_runs`);
* :mod:`~fairtrial.imports.csv`, :mod:`~fairtrial.imports.mlflow`,
  :mod:`~fairtrial.imports.wandb`, :mod:`~fairtrial.imports.tensorboard`: the readers;
* :mod:`~fairtrial.imports.analysis`: the analysis per task, and storing the results in a
  ledger as an experiment marked imported.

:func:`read_results` picks the reader from the source: ``mlflow:NAME_OR_ID``,
``wandb:ENTITY/PROJECT``, a folder (TensorBoard runs) or a CSV file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from fairtrial.errors import ImportedDataError
from fairtrial.imports.analysis import (
    across_tasks,
    analyze_imported,
    experiment_of,
    store_imported,
)
from fairtrial.imports.table import NOTE, ImportedResults, LoggedRun, Row, ValueRule, from_runs

SourceKind = Literal["csv", "mlflow", "wandb", "tensorboard"]
KINDS: tuple[str, ...] = ("csv", "mlflow", "wandb", "tensorboard")


def source_kind(source: str, kind: str | None = None) -> tuple[str, str]:
    """(kind, what it names): ``kind`` when given, else from the source's prefix or what it is
    on disk (a folder: TensorBoard runs; else a CSV file)."""
    for prefix in ("mlflow", "wandb"):
        if source.startswith(f"{prefix}:"):
            if kind not in (None, prefix):
                raise ImportedDataError(f"{source}: a {prefix} source, not --from {kind}")
            return prefix, source[len(prefix) + 1 :]
    if kind is None:
        kind = "tensorboard" if Path(source).is_dir() else "csv"
    if kind not in KINDS:
        raise ImportedDataError(f"--from {kind}: one of {', '.join(KINDS)} is needed")
    return kind, source


def read_results(
    source: str | Path,
    *,
    kind: str | None = None,
    metric: str | None = None,
    tracking_uri: str | None = None,
    seed_param: str = "seed",
    arm_params: Sequence[str] = (),
    task_param: str | None = None,
    value: ValueRule = "last",
    direction: str = "max",
) -> ImportedResults:
    """The results ``source`` names (see the module's docstring); ``kind`` overrides the
    guess (``csv``, ``mlflow``, ``wandb``, ``tensorboard``). A tracker needs ``metric``."""
    kind, what = source_kind(str(source), kind)
    if kind == "csv":
        from fairtrial.imports.csv import read_csv

        return read_csv(what, metric=metric)
    if metric is None:
        raise ImportedDataError(f"{source}: --metric names the logged metric to compare")
    if kind == "tensorboard":
        from fairtrial.imports.tensorboard import read_tensorboard

        return read_tensorboard(what, metric=metric, value=value, direction=direction)
    if kind == "mlflow":
        from fairtrial.imports.mlflow import read_mlflow

        return read_mlflow(
            what,
            metric=metric,
            tracking_uri=tracking_uri,
            seed_param=seed_param,
            arm_params=arm_params,
            task_param=task_param,
            value=value,
            direction=direction,
        )
    from fairtrial.imports.wandb import read_wandb

    return read_wandb(
        what,
        metric=metric,
        seed_param=seed_param,
        arm_params=arm_params,
        task_param=task_param,
        value=value,
        direction=direction,
    )


__all__ = [
    "KINDS",
    "NOTE",
    "ImportedResults",
    "LoggedRun",
    "Row",
    "across_tasks",
    "analyze_imported",
    "experiment_of",
    "from_runs",
    "read_results",
    "source_kind",
    "store_imported",
]
