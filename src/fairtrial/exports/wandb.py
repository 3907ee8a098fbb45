"""``fairtrial export --to wandb``: an experiment's trials as offline W&B runs, for ``wandb sync``.

One run per trial (its latest attempt), written by wandb itself in offline mode (never a
network call): ``group`` is the arm (``task/arm`` over several tasks), ``job_type``
``trial``, the config the arm's config and the trial's seeds (the same keys as MLflow's
params: :func:`fairtrial.exports.trials.params_of`), the history the series it logged, one
row per step, and the summary its result under the experiment's metric, its status and its
arm's verdict against the baseline. A failed or diverged trial's run ends with exit code 1
(W&B shows it failed). The runs land in ``DIR/wandb/offline-run-*``; ``wandb sync`` uploads
them to the project (default: the experiment's name).

Exporting again makes only the runs not there yet: a run's id is made of the experiment,
trial and attempt, and its folder is named after it. wandb starts its service process once
per Python process; each run after the first then takes under a tenth of a second.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairtrial.errors import ExportError, require
from fairtrial.exports.trials import (
    Exported,
    Unit,
    exported_trials,
    last_step,
    params_of,
    points_of,
    run_name,
    units_of,
)

if TYPE_CHECKING:
    from fairtrial.analysis import Options
    from fairtrial.ledger import ExperimentRow, Ledger, TrialRow

#: wandb's environment for an export: offline, silent, nothing sent anywhere (error reports
#: included), no code, git or machine scan
_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
}


def run_id(experiment_id: str, trial: TrialRow) -> str:
    """A trial attempt's W&B run id: the same on every export."""
    return f"{experiment_id}-{trial.id[:16]}-a{trial.attempt}"


def export_wandb(
    ledger: Ledger,
    exp: ExperimentRow,
    *,
    folder: Path | None = None,
    project: str | None = None,
    options: Options | None = None,
) -> Exported:
    """Export ``exp`` as offline W&B runs under ``folder`` (default: here; wandb puts them in
    its ``wandb/`` subfolder); see the module's docstring."""
    from fairtrial.analysis import Options
    from fairtrial.analysis.document import analyze

    require("wandb", "wandb", "Exporting to W&B")
    t0 = time.perf_counter()
    root = Path(folder or ".").resolve()
    runs = root / "wandb"
    out = Exported(f"W&B offline runs in {runs}", exp.name)
    doc = analyze(ledger, exp, options or Options())
    units = units_of(ledger, exp, doc)
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"W&B offline runs in {runs}: {exc}") from None
    there = {_id_of(p.name) for p in runs.glob("offline-run-*")}
    with _offline():
        import wandb

        settings = wandb.Settings(
            mode="offline", silent=True, console="off", save_code=False, disable_code=True,
            disable_git=True, disable_job_creation=True, x_disable_stats=True,
            x_disable_meta=True, x_disable_machine_info=True, x_save_requirements=False,
        )  # fmt: skip
        for unit in units:
            trials, waiting = exported_trials(ledger, unit)
            out.waiting += waiting
            for trial in trials:
                rid = run_id(unit.experiment_id, trial)
                if rid in there:
                    out.already += 1
                    continue
                where = (root, project or exp.name, rid)
                try:
                    out.points += _write_run(wandb, settings, ledger, where, unit, trial)
                except (wandb.errors.Error, OSError) as exc:
                    message = " ".join(str(exc).split())[:300]
                    raise ExportError(f"W&B offline runs in {runs}: {message}") from None
                out.made += 1
    out.then = f"upload them with: wandb sync {runs}/offline-run-*"
    out.seconds = time.perf_counter() - t0
    return out


def _id_of(folder: str) -> str:
    """The run id of an offline run's folder (``offline-run-DATE_TIME-ID``)."""
    parts = folder.split("-", 3)
    return parts[3] if len(parts) == 4 else ""


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """wandb's offline environment while the block runs (what the user set stays)."""
    mine = {k: v for k, v in _ENV.items() if k not in os.environ}
    os.environ.update(mine)
    try:
        yield
    finally:
        for k in mine:
            os.environ.pop(k, None)


def _write_run(
    wandb: Any,
    settings: Any,
    ledger: Ledger,
    where: tuple[Path, str, str],
    unit: Unit,
    trial: TrialRow,
) -> int:
    """One trial's offline run (``where``: its folder, project and id); how many points it
    holds."""
    root, project, rid = where
    verdict, against = unit.verdicts.get(trial.arm, ("none", ""))
    run = wandb.init(
        dir=str(root),
        project=project,
        id=rid,
        name=run_name(trial.arm, trial.seed, unit.task),
        group=f"{unit.task}/{trial.arm}" if unit.task else trial.arm,
        job_type="trial",
        tags=[trial.status, verdict],
        config=params_of(trial.config, trial.arm, trial.seed, trial.seeds, unit.task),
        settings=settings,
        reinit="create_new",
    )
    points = points_of(ledger, trial)
    rows: dict[int, dict[str, float]] = {}
    for step, _, name, value in points:
        rows.setdefault(step, {})[name] = value
    failed = trial.status != "finished"
    try:
        for step in sorted(rows):
            run.log(rows[step], step=step)
        summary: dict[str, Any] = {
            "status": trial.status,
            "verdict": verdict,
            "verdict_against": against,
            "experiment_id": unit.experiment_id,
            "trial_id": trial.id,
            "attempt": trial.attempt,
        }
        if trial.result is not None:
            summary[unit.metric] = trial.result
            summary["result_step"] = last_step(points)
        if trial.error:
            summary["error"] = trial.error
        run.summary.update(summary)
    finally:
        run.finish(exit_code=1 if failed else 0)
    return len(points) + (trial.result is not None)
