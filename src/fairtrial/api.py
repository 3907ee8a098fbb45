"""The Python API for notebooks and scripts: run a spec, analyse an experiment.

    import fairtrial
    summary = fairtrial.run("examples/digits.toml")
    a = fairtrial.analyze("digits-layernorm-warmup")
    a.comparisons[0].verdict            # "better"
    a                                   # in Jupyter: the verdict, ablation and arm tables

Both take the store as the CLI does (``store=None``: ``$FAIRTRIAL_STORE`` or
``./.fairtrial/ledger.db``). The CLI's ``run`` and ``report`` are these functions plus printing.
Results fairtrial did not run get the same analysis from :func:`analyze_results` (``fairtrial
analyze``)::

    from fairtrial.api import analyze_results
    a = analyze_results("results.csv", baseline="adam")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fairtrial.errors import ExperimentNotFound

if TYPE_CHECKING:
    from rich.console import Console

    from fairtrial.analysis.verdicts import FailurePolicy
    from fairtrial.backends import Backend
    from fairtrial.imports import ImportedResults
    from fairtrial.ledger import ExperimentRow, Ledger
    from fairtrial.results import Analysis
    from fairtrial.runner import RunSummary
    from fairtrial.spec import Spec


def find_experiment(ledger: Ledger, ref: str) -> ExperimentRow:
    """The experiment ``ref`` names: its id (or a unique prefix), its name, or its spec file."""
    path = Path(ref)
    if ref.endswith(".toml") or path.is_file():
        from fairtrial.spec import load_spec

        spec = load_spec(path)
        try:
            return ledger.experiment(spec.experiment_id)
        except ExperimentNotFound:
            raise ExperimentNotFound(
                f"spec '{ref}' (experiment {spec.experiment_id}) has not been run in "
                f"this store: fairtrial run {ref}"
            ) from None
    return ledger.find_experiment(ref)


def analyze(
    experiment: str,
    store: str | Path | Ledger | None = None,
    *,
    failures: FailurePolicy = "drop",
    resamples: int = 10_000,
    seed: int = 0,
) -> Analysis:
    """The analysis of a stored experiment (id, name or spec path), as ``fairtrial report``
    computes it: verdicts, ablations, arms, compute and the method used.

    ``failures="worst"`` scores a failed seed as the worst score any trial reached instead of
    dropping it; ``resamples`` and ``seed`` set the bootstrap and permutation test.
    """
    from fairtrial.analysis.document import analyze as analyze_experiment
    from fairtrial.analysis.verdicts import Options
    from fairtrial.ledger import Ledger

    ledger = store if isinstance(store, Ledger) else Ledger(store)
    try:
        exp = find_experiment(ledger, experiment)
        options = Options(failures=failures, n_resamples=resamples, seed=seed)
        return analyze_experiment(ledger, exp, options)
    finally:
        if ledger is not store:
            ledger.close()


def run(
    spec: str | Path | Spec,
    store: str | Path | Ledger | None = None,
    *,
    backend: Backend | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    keep_going: bool = False,
    max_retries: int | None = None,
    console: Console | None = None,
    show_progress: bool | None = False,
    also_untuned: bool = False,
    mirror: Literal["mlflow"] | None = None,
    tracking_uri: str | None = None,
) -> RunSummary:
    """Run every trial of ``spec`` (a path or a :class:`~fairtrial.spec.Spec`) not yet in the
    store, as ``fairtrial run`` does; an interrupted run resumes. Returns the run's summary;
    :func:`analyze` gives the verdicts.

    ``backend`` defaults to what ``fairtrial run --backend auto`` picks
    (:func:`fairtrial.backends.choose_backend`): vectorized for a recipe with a batched form,
    else local worker processes (``workers``: how many, default one per core; asking for
    workers picks local). ``also_untuned`` (with ``[tuning]``): also run the arms at their
    spec values, as ``--also-untuned`` does. ``mirror="mlflow"`` mirrors the trials to MLflow
    at ``tracking_uri`` while they run, as ``--mirror mlflow`` does.
    """
    from fairtrial.backends import choose_backend
    from fairtrial.exports.mirror import mirrored
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment
    from fairtrial.spec import Spec, load_spec

    loaded = spec if isinstance(spec, Spec) else load_spec(spec)
    ledger = store if isinstance(store, Ledger) else Ledger(store)
    try:
        with mirrored(loaded, mirror, tracking_uri, console):
            return run_experiment(
                loaded,
                ledger,
                backend or choose_backend(loaded, workers=workers)[0],
                retry_failed=retry_failed,
                keep_going=keep_going,
                max_retries=max_retries,
                console=console,
                show_progress=show_progress,
                also_untuned=also_untuned,
            )
    finally:
        if ledger is not store:
            ledger.close()


def analyze_results(
    source: str | Path | ImportedResults,
    baseline: str,
    *,
    task: str | None = None,
    metric: str | None = None,
    direction: Literal["max", "min"] = "max",
    smallest_effect: float | None = None,
    alpha: float = 0.05,
    kind: str | None = None,
    tracking_uri: str | None = None,
    seed_param: str = "seed",
    arm_params: Sequence[str] = (),
    task_param: str | None = None,
    value: Literal["last", "best"] = "last",
    resamples: int = 10_000,
    seed: int = 0,
) -> Analysis:
    """The analysis of per-seed results fairtrial did not run, as ``fairtrial analyze``
    computes it: ``source`` is a CSV file (columns arm, seed, value; optional task, metric),
    ``"mlflow:EXPERIMENT"``, ``"wandb:ENTITY/PROJECT"``, a folder of TensorBoard runs
    (``ROOT/ARM/seed_N/``) or an :class:`~fairtrial.imports.ImportedResults`. ``baseline``
    names the arm every other is compared with; it is called ``baseline`` in the document.

    Results of several tasks give one document with every claim judged across them and each
    task's analysis (``task`` picks one task's; :func:`analyze_results_by_task` gives each).
    The other arguments are the command's options (``metric``, ``value``, ``seed_param``,
    ``arm_params``, ``task_param`` for trackers); ``resamples`` and ``seed`` set the bootstrap
    and the permutation test.
    """
    docs = analyze_results_by_task(
        source, baseline, metric=metric, direction=direction,
        smallest_effect=smallest_effect, alpha=alpha, kind=kind, tracking_uri=tracking_uri,
        seed_param=seed_param, arm_params=arm_params, task_param=task_param, value=value,
        resamples=resamples, seed=seed,
    )  # fmt: skip
    if task is None and len(docs) == 1:
        return next(iter(docs.values()))
    if task is None:  # several tasks: every claim judged across them
        from fairtrial.imports import across_tasks
        from fairtrial.record import Hypothesis

        name = str(source) if not isinstance(source, (str, Path)) else Path(source).stem
        hyp = Hypothesis(smallest_effect=smallest_effect, alpha=alpha)
        return across_tasks(docs, name=name, direction=direction, hypothesis=hyp)
    if task not in docs:
        from fairtrial.errors import ImportedDataError

        raise ImportedDataError(
            f"{source}: results of the tasks {', '.join(docs)}; task= picks one ('{task}' is "
            "none of them)"
        )
    return docs[task]


def analyze_results_by_task(
    source: str | Path | ImportedResults,
    baseline: str,
    *,
    metric: str | None = None,
    direction: Literal["max", "min"] = "max",
    smallest_effect: float | None = None,
    alpha: float = 0.05,
    kind: str | None = None,
    tracking_uri: str | None = None,
    seed_param: str = "seed",
    arm_params: Sequence[str] = (),
    task_param: str | None = None,
    value: Literal["last", "best"] = "last",
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Analysis]:
    """:func:`analyze_results` of every task: ``{task: analysis}`` in task order."""
    from fairtrial.analysis.verdicts import Options
    from fairtrial.imports import ImportedResults, analyze_imported, read_results
    from fairtrial.record import Hypothesis

    results = (
        source
        if isinstance(source, ImportedResults)
        else read_results(
            source, kind=kind, metric=metric, tracking_uri=tracking_uri,
            seed_param=seed_param, arm_params=arm_params, task_param=task_param, value=value,
            direction=direction,
        )
    )  # fmt: skip
    return analyze_imported(
        results,
        baseline,
        direction=direction,
        hypothesis=Hypothesis(smallest_effect=smallest_effect, alpha=alpha),
        options=Options(n_resamples=resamples, seed=seed),
    )
