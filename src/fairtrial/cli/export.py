"""``fairtrial export``: an experiment's trials, verdicts and report in MLflow or W&B."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from fairtrial.cli._common import err, find_experiment, open_ledger, store_option
from fairtrial.errors import FairtrialError


@click.command()
@click.argument("experiment")
@click.option(
    "--to",
    "target",
    type=click.Choice(["mlflow", "wandb"]),
    required=True,
    help="mlflow: a run per trial, nested under a run per arm, and the report as artifacts; "
    "wandb: an offline run per trial (grouped by arm), for wandb sync",
)
@click.option(
    "--tracking-uri",
    help="mlflow: where to (default: $MLFLOW_TRACKING_URI, else MLflow's default)",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="wandb: the folder whose wandb/ holds the offline runs (default: here, ./wandb)",
)
@click.option("--project", help="wandb: the W&B project (default: the experiment's name)")
@store_option
def export(
    experiment: str,
    target: str,
    tracking_uri: str | None,
    folder: Path | None,
    project: str | None,
    store: str | None,
) -> None:
    """Send EXPERIMENT (name, id or spec path) to MLflow or W&B: a run per trial (config,
    seeds, logged series, result, status, the arm's verdict) and the report. Exporting again
    adds only what is missing."""
    if target == "mlflow" and (folder is not None or project is not None):
        raise FairtrialError("--dir and --project are for --to wandb, not --to mlflow")
    if target == "wandb" and tracking_uri is not None:
        raise FairtrialError("--tracking-uri is for --to mlflow, not --to wandb")
    ledger = open_ledger(store)
    exp = find_experiment(ledger, experiment)
    if target == "mlflow":
        from fairtrial.exports.mlflow import export_mlflow

        done = export_mlflow(ledger, exp, tracking_uri=tracking_uri)
    else:
        from fairtrial.exports.wandb import export_wandb

        done = export_wandb(ledger, exp, folder=folder, project=project)
    err.print(escape(done.line()), highlight=False)
