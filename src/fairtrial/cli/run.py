"""``fairtrial run`` and ``fairtrial demo``: run the trials of a spec, then report."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from fairtrial.cli._common import (
    by_signal,
    err,
    exit_status,
    make_backend,
    open_ledger,
    slurm_options,
    store_option,
)
from fairtrial.cli.report import print_report
from fairtrial.errors import ExperimentNotFound, FairtrialError


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(["auto", "local", "inline", "vectorized", "ray", "slurm"]),
    default="auto",
    show_default=True,
    help="auto: vectorized when the recipe has a batched form, else local (it says which "
    "and why); local: persistent worker processes; inline: this process, one trial at a "
    "time; vectorized: trials that can share a model as one batched model; ray: Ray tasks "
    "on a cluster; slurm: Slurm jobs in job arrays (see --slurm-*).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Trials at once (default: cores).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads per worker.")
@click.option(
    "--group",
    type=click.IntRange(min=1),
    help="vectorized: at most N trials per batched model (default: all that can share one).",
)
@click.option(
    "--address",
    help="ray: the cluster to join (ray://HOST:10001, HOST:6379 or 'auto'; default: "
    "RAY_ADDRESS, else a Ray instance started for this run).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    help="Re-runs of a trial whose worker died under it (default: the spec's max_retries, 2).",
)
@slurm_options
@store_option
@click.option("--resume", is_flag=True, help="Only continue an experiment already in the store.")
@click.option("--retry-failed", is_flag=True, help="Also re-run failed and diverged trials.")
@click.option(
    "--keep-going",
    is_flag=True,
    help="Run every trial even when the first trial of every arm failed with the same error "
    "(by default the run stops there: the same error would repeat).",
)
@click.option(
    "--also-untuned",
    is_flag=True,
    help="With [tuning]: also run every arm at its spec values on the same seeds, so the "
    "report shows the verdict before tuning beside the one after equal tuning.",
)
@click.option(
    "--report/--no-report", "show_report", default=True, help="Print the report at the end."
)
@click.option(
    "--mirror",
    type=click.Choice(["mlflow"]),
    help="Mirror the trials to MLflow live: a run per trial, its points as they come (fairtrial "
    "export adds the verdicts and the report); if MLflow fails, one warning and the run goes on.",
)
@click.option("--tracking-uri", help="--mirror mlflow: where to (default: $MLFLOW_TRACKING_URI).")
def run(
    spec_path: Path,
    backend: str,
    workers: int | None,
    threads: int | None,
    group: int | None,
    address: str | None,
    slurm: dict[str, Any],
    max_retries: int | None,
    store: str | None,
    resume: bool,
    retry_failed: bool,
    keep_going: bool,
    also_untuned: bool,
    show_report: bool,
    mirror: str | None,
    tracking_uri: str | None,
) -> None:
    """Run every trial of SPEC not yet in the store (an interrupted run resumes).

    A trial whose identity (task data, recipe code, arm config, seed) already has a result in
    the store is reused, from this experiment or any other; an edited recipe runs anew.

    Exit status: 0 when every trial of the experiment finished; 1 when any failed, diverged
    or is left unfinished (the run stopped early, or another run holds it); 2 for a user
    error (bad spec, unknown experiment, missing extra) or a store that cannot be used
    (unreachable, corrupt, read-only); 130 when interrupted (Ctrl-C), 143 on SIGTERM, 129 on
    SIGHUP.
    """
    from fairtrial.exports.mirror import mirrored
    from fairtrial.spec import load_spec

    spec = load_spec(spec_path)
    ledger = open_ledger(store)
    if resume:
        try:
            ledger.experiment(spec.experiment_id)
        except ExperimentNotFound:
            raise FairtrialError(
                f"--resume: experiment '{spec.name}' ({spec.experiment_id}) was never started "
                "in this store; drop --resume to start it"
            ) from None
    with mirrored(spec, mirror, tracking_uri, err):
        run_and_report(
            spec,
            ledger,
            make_backend(backend, workers, threads, group, address, spec, slurm),
            retry_failed,
            show_report,
            max_retries,
            keep_going,
            also_untuned,
        )


@click.command()
@click.option("--workers", type=click.IntRange(min=1), help="Trials at once (default: cores).")
@store_option
def demo(workers: int | None, store: str | None) -> None:
    """The flagship example, end to end: a real experiment on digits, then its report."""
    from fairtrial.spec import load_spec

    folder = Path(".fairtrial") / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "digits-demo.toml"
    spec_path.write_text(resources.files("fairtrial").joinpath("examples/demo.toml").read_text())
    err.print(f"spec written to {spec_path} (edit it, then: fairtrial run {spec_path})")
    spec = load_spec(spec_path)
    backend = make_backend("auto", workers, None, spec=spec)
    run_and_report(spec, open_ledger(store), backend, False, True)


def run_and_report(
    spec: Any,
    ledger: Any,
    backend: Any,
    retry_failed: bool,
    show_report: bool,
    max_retries: int | None = None,
    keep_going: bool = False,
    also_untuned: bool = False,
) -> None:
    """Run ``spec``, print what the run did and the report; exit 1 unless every trial
    finished, 128 + the signal when interrupted."""
    from fairtrial.runner import run_experiment

    err.print(
        f"[bold]{escape(spec.name)}[/] ({spec.experiment_id}): "
        f"{len(spec.arms)} arms × "
        + (
            f"seeds auto (pilot {spec.seeds}, at most {spec.max_seeds})"
            if spec.auto_seeds
            else f"{spec.seeds} seeds"
        )
        + f" on '{spec.task}', "
        f"backend {backend.name} ({_how(backend)}), "
        f"store {ledger.dialect}"
    )
    try:
        summary = run_experiment(
            spec,
            ledger,
            backend,
            retry_failed=retry_failed,
            console=err,
            max_retries=max_retries,
            keep_going=keep_going,
            also_untuned=also_untuned,
        )
    except KeyboardInterrupt as exc:
        err.print(
            f"[yellow]interrupted[/]{by_signal(exc)}: finished trials are kept; run the same "
            "command to resume"
        )
        sys.exit(exit_status(exc))
    for line in run_summary_lines(summary):
        err.print(line)
    if show_report:
        print_report(ledger, ledger.experiment(spec.experiment_id), "text", None)
    if not summary.complete:
        sys.exit(1)


def _how(backend: Any) -> str:
    """How many trials a backend runs at once, in words."""
    if backend.name == "slurm":
        at_once = f"at most {backend.workers}" if backend.workers else "as many as the cluster runs"
        return f"jobs: {at_once} at once, {backend.threads or 1} threads each"
    return f"{backend.workers} workers × {backend.threads or 1} threads"


def run_summary_lines(summary: Any) -> list[str]:
    """What a run did and, when not every trial finished, what to do about it."""
    lines = []
    tuning = getattr(summary, "tuning", None)
    if tuning is not None:
        failed = tuning.failed + tuning.diverged
        lines.append(
            f"tuning: ran {tuning.ran} tuning trials in {tuning.seconds:.1f} s "
            f"({tuning.finished} finished, {failed} failed or diverged: a configuration that "
            "fails is a result of tuning, not an error of the run)"
            + (f"; {tuning.already_done} were already in the store" if tuning.already_done else "")
        )
    untuned = getattr(summary, "untuned", None)
    if untuned is not None:
        lines.append(
            f"untuned: {untuned.total} trials of the arms at their spec values"
            + (f", {untuned.ran} run now" if untuned.ran else ", already in the store")
        )
    done = summary.already_done
    lines += [
        f"ran {summary.ran} trials in {summary.seconds:.1f} s ({summary.finished} finished, "
        f"{summary.failed} failed, {summary.diverged} diverged)"
        + (f"; {summary.retried} lost attempts retried" if summary.retried else "")
        + (f"; {done} were already in the store" if done else "")
        + (
            f" ({summary.reused} reused from other experiments with the same trial identity)"
            if summary.reused
            else ""
        )
    ]
    if summary.stopped:
        lines.append(f"[bold red]stopped early[/]: {escape(summary.stopped)}")
    if summary.kept_failures:
        lines.append(
            f"[yellow]{summary.kept_failures} failed or diverged trial(s) from earlier runs are "
            "kept as results[/]: fix the cause, then run again with --retry-failed to re-run them"
        )
    if summary.elsewhere:
        who = "; ".join(summary.elsewhere_owners) or "another run"
        lines.append(
            f"[yellow]{summary.elsewhere} trial(s) are held by another live run[/] on this "
            f"ledger ({escape(who)}): they are not run twice; run this command again when it "
            "has ended (a run that died releases them when its lease expires)"
        )
    if summary.superseded:
        lines.append(
            f"[yellow]{summary.superseded} attempt(s) of this run ended after their lease "
            "expired and another run took the trial over[/]: kept in the ledger as superseded "
            "attempts; the other run's attempt is the trial's result"
        )
    st = summary.statuses
    if not summary.complete:
        parts = [f"{n} {k}" for k, n in sorted(st.items()) if k != "finished" and n]
        lines.append(
            f"[bold red]not every trial finished[/] ({st.get('finished', 0)}/{summary.total} "
            f"finished; {', '.join(parts)}): exit status 1"
        )
    return lines
