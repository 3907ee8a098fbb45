"""Data files that installed packages ship in their wheels, found and read without importing
the packages: ``sklearn.datasets`` and ``aeon.datasets`` each take seconds to import (scipy,
pandas; aeon numba too), paid by every run and every worker.

A missing package is a :class:`~fairtrial.errors.MissingDependency` naming the extra that
installs it; an installed version without the file, a :class:`~fairtrial.errors.TaskError`.
What a file gives is still checked by the task's pinned checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fairtrial.errors import MissingDependency, TaskError, install_hint

__all__ = ["package_file", "shipped_file", "sklearn_csv"]


def package_file(package: str, *parts: str) -> Path | None:
    """The file ``parts`` inside installed package ``package``, found without importing it
    (``find_spec`` of a top-level package runs none of its code); None where the package or
    the file is not there."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    return None


def shipped_file(package: str, extra: str, task_name: str, *parts: str) -> Path:
    """A data file ``package`` ships in its wheel; MissingDependency (with the install hint)
    where the package is not installed, TaskError where this version of it lacks the file."""
    import importlib.util

    path = package_file(package, *parts)
    if path is not None:
        return path
    try:
        installed = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        raise MissingDependency(package, extra, f"the '{task_name}' task")
    raise TaskError(
        f"built-in task '{task_name}': the installed {package} ({_version(package)}) has no "
        f"{'/'.join(parts)}; install a version that ships it: {install_hint(extra)}"
    )


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return f"version {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return "version unknown"


def sklearn_csv(name: str, *, skiprows: int = 0, delimiter: str | None = ",") -> Any:
    """A CSV file scikit-learn ships (``sklearn/datasets/data/NAME``, gzipped or not), read as
    its loader reads it, without importing ``sklearn.datasets`` (seconds of scipy and pandas
    imports, paid by every run and every worker); None where it is not found. The task's
    pinned checksum still checks what it gives."""
    import gzip

    path = package_file("sklearn", "datasets", "data", name)
    if path is None:
        return None
    if name.endswith(".gz"):
        with gzip.open(path, mode="rt", encoding="utf-8") as text:
            return np.loadtxt(text, delimiter=delimiter, skiprows=skiprows)
    return np.loadtxt(path, delimiter=delimiter, skiprows=skiprows, encoding="utf-8")
