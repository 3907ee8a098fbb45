"""One exception tree for everything fairtrial raises on purpose.

::

    FairtrialError                 base: the CLI prints its message as one line, exit 2
    ├── SpecError                  the spec file is wrong (names the file, line/key and the fix)
    ├── TaskError                  a task cannot be found, built or checked
    ├── RecipeError                a recipe cannot be imported or broke the recipe contract
    ├── LedgerError                the store cannot be opened or holds something unexpected
    ├── ExperimentNotFound         no experiment, or several, match a name, path or id
    ├── RegistrationError          a preregistration cannot be made (e.g. trials already ran)
    ├── BundleError                a bundle is unsafe, corrupt or modified (names the member)
    ├── ReplicationError           a bundle cannot be replicated as asked (e.g. no tolerance)
    ├── RegistryError              a registry refused a request, or cannot be reached
    ├── BackendError               trials cannot run where the backend would run them
    ├── ImportedDataError          results to import are unusable (names file, row, column)
    ├── ExportError                a tracker to export to cannot be reached or refused the data
    └── MissingDependency          an optional extra is not installed (says which one)

Exceptions raised *inside* a trial never cross this tree: a trial that raises is a result
(status ``failed`` with its reason), not an error of the run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path


class FairtrialError(Exception):
    """Base of every error fairtrial raises for a user mistake or an unusable environment."""


class SpecError(FairtrialError):
    """The spec file is invalid; the message names the file, the line or key, and the fix."""


class TaskError(FairtrialError):
    """A task cannot be found, built, or checked."""


class RecipeError(FairtrialError):
    """A recipe cannot be imported, or broke the recipe contract."""


class LedgerError(FairtrialError):
    """The ledger cannot be opened, or holds something unexpected."""


class ExperimentNotFound(FairtrialError):
    """No experiment in the ledger matches the given name, spec path or id, or several do
    (the message lists them, to pick one by id)."""


class RegistrationError(FairtrialError):
    """A preregistration cannot be made: e.g. the experiment's trials already started."""


class BundleError(FairtrialError):
    """A bundle cannot be read safely, is corrupt, or differs from its manifest."""


class ReplicationError(FairtrialError):
    """A bundle cannot be replicated as asked (no tolerance, no code snapshot, ...)."""


class RegistryError(FairtrialError):
    """A registry request is invalid or was refused; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BackendError(FairtrialError):
    """Trials cannot run where the backend would run them: e.g. its worker processes cannot
    import the script or notebook that started the run."""


class ImportedDataError(FairtrialError):
    """Results to import (``fairtrial analyze``) cannot be used as they are: the message names
    the file or run, the row and column, and what would be valid."""


class ExportError(FairtrialError):
    """An export to a tracker (MLflow, W&B) failed: the tracker cannot be reached, or refused
    what was sent; the message names the tracker and its address."""


class MissingDependency(FairtrialError):
    """An optional dependency is missing; the message gives the command that installs it."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{module}' package: {install_hint(extra)}")
        self.module = module
        self.extra = extra


class TrialDiverged(Exception):
    """Raised inside a trial when a logged metric becomes NaN or infinite."""


def require(module: str, extra: str, purpose: str) -> None:
    """Raise :class:`MissingDependency` unless ``module`` can be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(module, extra, purpose)


def install_hint(extra: str, package_file: Path | None = None) -> str:
    """The command that installs fairtrial's optional ``extra`` into the running environment.

    From a clone (an editable install, or ``src`` on the path) ``pip install 'fairtrial[X]'``
    would put a release from the package index beside the clone's code: the clone itself must
    be installed, by its path (``.`` in its root). pip is the running interpreter's, named by
    path where its environment is not the activated one (``.venv/bin/fairtrial`` run directly),
    since a bare ``pip`` would install elsewhere. ``package_file`` stands for this module's
    file (tests pass one from an installed layout).
    """
    here = Path(package_file or __file__).resolve()
    root = here.parents[2]
    if here.parents[1].name == "src" and (root / "pyproject.toml").is_file():
        target = "." if root == Path.cwd().resolve() else str(root)
        return f"{_pip()} install -e {shlex.quote(f'{target}[{extra}]')}"
    return f"{_pip()} install {shlex.quote(f'fairtrial[{extra}]')}"


def _pip() -> str:
    """``pip`` if it is the running environment's, else the path of that environment's pip."""
    in_venv = sys.prefix != sys.base_prefix
    active = os.environ.get("VIRTUAL_ENV")
    if not in_venv or (active and Path(active).resolve() == Path(sys.prefix).resolve()):
        return "pip"
    found = shutil.which("pip", path=sysconfig.get_path("scripts"))
    if found is None:
        return f"{shlex.quote(sys.executable)} -m pip"
    pip, cwd = Path(found), Path.cwd()
    # relative only below the working directory, and never a bare "pip" (PATH would decide)
    shown = pip.relative_to(cwd) if pip.is_relative_to(cwd) and pip.parent != cwd else pip
    return shlex.quote(str(shown))
