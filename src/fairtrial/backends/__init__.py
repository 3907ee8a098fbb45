"""Backends: where trials run. One small interface (:class:`Backend`), several places."""

from __future__ import annotations

from fairtrial.backends.base import (
    Backend,
    InlineBackend,
    Sink,
    TrialJob,
    TrialOutcome,
    execute_trial,
)
from fairtrial.backends.local import LocalBackend, split_cores


def make_backend(name: str, *, workers: int | None = None, threads: int | None = None) -> Backend:
    """A backend by its CLI name."""
    if name == "local":
        return LocalBackend(workers=workers, threads=threads)
    if name == "inline":
        backend = InlineBackend()
        backend.threads = threads
        return backend
    raise ValueError(f"unknown backend '{name}'; valid: local, inline")


__all__ = [
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
