"""Backends: where trials run. One small interface (:class:`Backend`), several places.

What runs a trial is :func:`fairtrial.execute.execute_trial` (also importable from here),
the same code under every backend.
"""

from __future__ import annotations

from fairtrial.backends.base import Backend, Sink, TrialJob, TrialOutcome
from fairtrial.backends.inline import InlineBackend
from fairtrial.backends.local import LocalBackend, split_cores
from fairtrial.execute import execute_trial

#: the backends ``make_backend`` (and ``fairtrial run --backend``) knows
BACKENDS = ("local", "inline", "vectorized", "ray")


def make_backend(
    name: str,
    *,
    workers: int | None = None,
    threads: int | None = None,
    group: int | None = None,
    address: str | None = None,
) -> Backend:
    """A backend by its CLI name (vectorized and Ray are imported only when asked for)."""
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
    raise ValueError(f"unknown backend '{name}'; valid: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "InlineBackend",
    "LocalBackend",
    "Sink",
    "TrialJob",
    "TrialOutcome",
    "execute_trial",
    "make_backend",
    "split_cores",
]
