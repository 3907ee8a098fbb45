"""Backends: where trials run. One small interface (:class:`Backend`), several places.

What runs a trial is :func:`fairtrial.execute.execute_trial` (also importable from here),
the same code under every backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairtrial.backends.base import Backend, Sink, TrialJob, TrialOutcome
from fairtrial.backends.inline import InlineBackend
from fairtrial.backends.local import LocalBackend, split_cores
from fairtrial.execute import execute_trial, resolve_recipe, vectorized_form

if TYPE_CHECKING:
    from fairtrial.spec import Spec

#: the backends ``make_backend`` knows (``fairtrial run --backend`` also takes ``auto``)
BACKENDS = ("local", "inline", "vectorized", "ray", "slurm")


def choose_backend(
    spec: Spec,
    *,
    workers: int | None = None,
    threads: int | None = None,
    group: int | None = None,
) -> tuple[Backend, str]:
    """The backend ``--backend auto`` (the default) picks for ``spec``, and why, in words.

    Vectorized when the spec's recipe has a batched form (every built-in torch recipe): its
    trials train as a few batched models in this process, many times faster than one trial
    at a time. Local worker processes otherwise, and also when the run needs what only
    workers give: a command recipe (a program of its own), a ``time_limit`` (enforced by
    stopping a worker), a ``target`` (each trial's own time to reach it; a batched model's
    members share their time), a speed trial (each trial's own time is the outcome), or
    ``--workers`` asked for.
    """
    local = LocalBackend(workers=workers, threads=threads)
    if spec.command is not None:
        return local, "a command recipe runs as a program of its own, in worker processes"
    if workers is not None:
        return local, "--workers asks for worker processes"
    if spec.time_limit:
        return local, "the spec's time_limit is enforced by stopping a worker process"
    if spec.target is not None:
        return local, "the spec's target asks each trial's own time to reach it"
    if spec.primary != "metric":
        return (
            local,
            "a speed trial times each trial on its own (a batched model's members "
            "share their time)",
        )
    base_dir = str(spec.base_dir.resolve()) if spec.base_dir else None
    try:
        form = vectorized_form(resolve_recipe(spec.recipe or "", base_dir))
    except Exception:  # the trials report why, one line each
        form = None
    if form is None:
        return local, f"recipe '{spec.recipe}' has no batched form (train_vectorized)"
    from fairtrial.backends.vectorized import VectorizedBackend

    return (
        VectorizedBackend(group=group, threads=threads),
        f"recipe '{spec.recipe}' has a batched form: trials that can share a model train "
        "as one, in this process",
    )


def make_backend(
    name: str,
    *,
    workers: int | None = None,
    threads: int | None = None,
    group: int | None = None,
    address: str | None = None,
) -> Backend:
    """A backend by its CLI name (vectorized, Ray and Slurm are imported only when asked
    for; a Slurm backend with a spec's ``[slurm]`` settings is
    ``SlurmBackend(SlurmSettings.of(spec.slurm), resources=spec.resources)``)."""
    if name == "local":
        return LocalBackend(workers=workers, threads=threads)
    if name == "inline":
        backend = InlineBackend()
        backend.threads = threads
        return backend
    if name == "vectorized":
        from fairtrial.backends.vectorized import VectorizedBackend

        return VectorizedBackend(group=group, threads=threads)
    if name == "ray":
        from fairtrial.backends.ray import RayBackend

        return RayBackend(address=address, workers=workers, threads=threads)
    if name == "slurm":
        from fairtrial.backends.slurm import SlurmBackend

        return SlurmBackend(threads=threads)
    raise ValueError(f"unknown backend '{name}'; valid: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "InlineBackend",
    "LocalBackend",
    "Sink",
    "TrialJob",
    "TrialOutcome",
    "choose_backend",
    "execute_trial",
    "make_backend",
    "split_cores",
]
