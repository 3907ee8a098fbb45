"""Per-seed results from Weights & Biases: the finished runs of ``ENTITY/PROJECT``.

Read with wandb's public API (``wandb.Api().runs(path)``; the ``wandb`` extra, imported only
here). Each run becomes a plain record (:func:`record_of`: its id, name, state, config,
summary and the metric's history) and :func:`logged_runs` maps records to the runs
:func:`fairtrial.imports.table.from_runs` reads, as for MLflow and TensorBoard: that part is
pure, and is what the tests exercise without wandb.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fairtrial.errors import ImportedDataError, require
from fairtrial.imports.table import ImportedResults, LoggedRun, ValueRule, from_runs


def read_wandb(
    path: str,
    *,
    metric: str,
    seed_param: str = "seed",
    arm_params: Sequence[str] = (),
    task_param: str | None = None,
    value: ValueRule = "last",
    direction: str = "max",
) -> ImportedResults:
    """The results of the W&B project ``path`` (``ENTITY/PROJECT``)."""
    require("wandb", "wandb", "Reading W&B runs")
    import wandb

    source = f"wandb:{path}"
    try:
        records = [record_of(run, metric) for run in wandb.Api().runs(path)]
    except (ValueError, wandb.errors.Error) as exc:  # CommError, UsageError, ...
        raise ImportedDataError(f"{source}: {' '.join(str(exc).split())[:300]}") from None
    return results_of(
        records,
        source=source,
        name=path.rsplit("/", 1)[-1],
        metric=metric,
        seed_param=seed_param,
        arm_params=arm_params,
        task_param=task_param,
        value=value,
        direction=direction,
    )


def record_of(run: Any, metric: str) -> dict[str, Any]:
    """A W&B run as a plain record: id, name, state, config, summary and the metric's
    history as ``(step, value)`` points."""
    history = [
        (row.get("_step", i), row[metric])
        for i, row in enumerate(run.scan_history(keys=[metric, "_step"]))
        if row.get(metric) is not None
    ]
    return {
        "id": run.id,
        "name": run.name,
        "state": run.state,
        "config": dict(run.config),
        "summary": dict(run.summary),
        "history": history,
    }


def logged_runs(records: Sequence[Mapping[str, Any]], metric: str) -> list[LoggedRun]:
    """The finished runs among ``records`` (:func:`record_of`'s shape): the config without
    wandb's own keys (``_wandb``, and ``{"value": v}`` wrappers unwrapped), and the metric's
    history, or its summary value when no history was kept."""
    out = []
    for rec in records:
        if rec.get("state", "finished") != "finished":
            continue
        config = {
            k: v["value"] if isinstance(v, Mapping) and set(v) <= {"value", "desc"} else v
            for k, v in (rec.get("config") or {}).items()
            if not str(k).startswith("_")
        }
        history = list(rec.get("history") or [])
        summary = rec.get("summary") or {}
        if not history and isinstance(summary.get(metric), (int, float)):
            history = [(0, float(summary[metric]))]
        out.append(LoggedRun(f"run {rec.get('id')} ({rec.get('name')})", config, history))
    return out


def results_of(
    records: Sequence[Mapping[str, Any]], *, source: str, name: str, metric: str, **how: Any
) -> ImportedResults:
    """The results of W&B run records (pure: :func:`logged_runs`, then
    :func:`~fairtrial.imports.table.from_runs` with ``how``'s seed, arm, task and value
    rules)."""
    runs = logged_runs(records, metric)
    out = from_runs(runs, source=source, name=name, metric=metric, **how)
    left = len(records) - len(runs)
    if left:
        out = replace(out, skipped=(*out.skipped, f"{left} run(s) not finished left out"))
    return out
