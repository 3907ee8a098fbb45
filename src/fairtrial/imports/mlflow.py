"""Per-seed results from MLflow: the finished runs of one experiment, by name or id.

Read with MLflow's tracking client (the ``mlflow`` extra, imported only here). Each finished
run is one (arm, seed): its params give the seed (``--seed-param``) and the arm (the other
params, or ``--arm-param`` ones), the metric's logged history gives the value (its last or
best point); :func:`fairtrial.imports.table.from_runs` does the mapping. Runs still running,
failed or killed are left out, and the report says how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fairtrial.errors import ImportedDataError, require
from fairtrial.imports.table import ImportedResults, LoggedRun, ValueRule, _listed, from_runs


def read_mlflow(
    experiment: str,
    *,
    metric: str,
    tracking_uri: str | None = None,
    seed_param: str = "seed",
    arm_params: Sequence[str] = (),
    task_param: str | None = None,
    value: ValueRule = "last",
    direction: str = "max",
) -> ImportedResults:
    """The results of the MLflow experiment named (or with the id) ``experiment``, at
    ``tracking_uri`` (default: MLflow's own, ``$MLFLOW_TRACKING_URI``)."""
    require("mlflow", "mlflow", "Reading MLflow runs")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient, get_tracking_uri

    uri = tracking_uri or get_tracking_uri()
    where = f"mlflow:{experiment} ({uri})"
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = _experiment(client, experiment, where)
        runs = _runs(client, exp.experiment_id)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        logged = [
            LoggedRun(
                where=f"run {r.info.run_id[:8]} ({r.info.run_name})",
                params=dict(r.data.params),
                history=[
                    (m.step, m.value)
                    for m in sorted(
                        client.get_metric_history(r.info.run_id, metric),
                        key=lambda m: (m.step, m.timestamp),
                    )
                ],
            )
            for r in finished
        ]
    except MlflowException as exc:
        raise ImportedDataError(f"{where}: {_one_line(str(exc))}") from None
    source = f"mlflow:{exp.name} ({uri})"
    if not any(run.history for run in logged):
        keys = sorted({k for r in finished for k in r.data.metrics})
        raise ImportedDataError(
            f"{source}: no finished run logged the metric '{metric}' ({len(finished)} finished "
            f"of {len(runs)} run(s)); --metric is one of {_listed(keys) or 'none logged'}"
        )
    out = from_runs(
        logged,
        source=source,
        name=exp.name,
        metric=metric,
        seed_param=seed_param,
        arm_params=arm_params,
        task_param=task_param,
        value=value,
        direction=direction,
    )
    left = len(runs) - len(finished)
    if left:
        statuses = ", ".join(sorted({r.info.status for r in runs if r.info.status != "FINISHED"}))
        out = replace(
            out, skipped=(*out.skipped, f"{left} run(s) not finished ({statuses}) left out")
        )
    return out


def _experiment(client: Any, ref: str, where: str) -> Any:
    """The experiment named ``ref``, else the one with id ``ref``; else an error naming those
    there are."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(ref)
    if exp is None:
        try:
            exp = client.get_experiment(ref)
        except MlflowException:
            exp = None
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ImportedDataError(
            f"{where}: no experiment named '{ref}' or with that id; experiments: "
            f"{_listed(names) or 'none'}"
        )
    return exp


def _runs(client: Any, experiment_id: str) -> list[Any]:
    """Every active run of the experiment, page by page, oldest first."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
