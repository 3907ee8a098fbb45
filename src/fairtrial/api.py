"""The Python API for notebooks and scripts: run a spec, analyse an experiment.

    import fairtrial
    summary = fairtrial.run("examples/digits.toml")
    a = fairtrial.analyze("digits-layernorm-warmup")
    a.comparisons[0].verdict            # "better"
    a                                   # in Jupyter: the verdict, ablation and arm tables

Both take the store as the CLI does (``store=None``: ``$FAIRTRIAL_STORE`` or
``./.fairtrial/ledger.db``). The CLI's ``run`` and ``report`` are these functions plus printing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fairtrial.errors import ExperimentNotFound

if TYPE_CHECKING:
    from rich.console import Console

    from fairtrial.analysis.verdicts import FailurePolicy
    from fairtrial.backends import Backend
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
) -> RunSummary:
    """Run every trial of ``spec`` (a path or a :class:`~fairtrial.spec.Spec`) not yet in the
    store, as ``fairtrial run`` does; an interrupted run resumes. Returns the run's summary;
    :func:`analyze` gives the verdicts.

    ``backend`` defaults to what ``fairtrial run --backend auto`` picks
    (:func:`fairtrial.backends.choose_backend`): vectorized for a recipe with a batched form,
    else local worker processes (``workers``: how many, default one per core; asking for
    workers picks local). ``also_untuned`` (with ``[tuning]``): also run the arms at their
    spec values, as ``--also-untuned`` does.
    """
    from fairtrial.backends import choose_backend
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment
    from fairtrial.spec import Spec, load_spec

    loaded = spec if isinstance(spec, Spec) else load_spec(spec)
    ledger = store if isinstance(store, Ledger) else Ledger(store)
    try:
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
