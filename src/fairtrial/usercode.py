"""The user's own code: recipes and tasks named ``module:function``, imported and cached.

A spec names its recipe and task as ``module:function``; the module is looked up in the
spec's folder first (:func:`import_object`). What is imported stays in this process: Python
keeps every module in ``sys.modules``, and fairtrial keeps the recipes and tasks it resolved
(:func:`cached`), so that a run does not import them again for every trial.

A long-lived process (a notebook, an interactive session, the inline backend in a script that
runs several specs) therefore keeps running the code as it was first imported: after editing
a recipe or a task, call :func:`forget_modules` to have the next run import it afresh.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

#: what was resolved from a reference: (kind, "module:function", folder) -> the object
_OBJECTS: dict[tuple[str, str, str], Any] = {}


def cached(kind: str, ref: str, folder: str, load: Callable[[], T]) -> T:
    """The ``kind`` object (e.g. "recipe", "task") named ``ref`` under ``folder``: ``load()``
    the first time, the same object after that, until :func:`forget_modules` forgets it."""
    key = (kind, ref, folder)
    if key not in _OBJECTS:
        _OBJECTS[key] = load()
    value: T = _OBJECTS[key]
    return value


def _top(name: str) -> str:
    return name.partition(":")[0].split(".")[0]


def forget_modules(target: str | os.PathLike[str] | ModuleType) -> list[str]:
    """Forget user modules this process imported, so that the next run imports them afresh.

    This is how edited recipe or task code takes effect in a notebook or any other process
    that keeps running: edit ``my_recipes.py``, call ``forget_modules("my_recipes")`` (or
    pass the module itself, or the folder the files are in), then run again. Without it, the
    run goes on with the code as it was first imported.

    ``target`` is a module name (a ``module:function`` reference works too), a module, or a
    folder. A name or module forgets its whole top-level package, since the package's modules
    may import each other; a folder forgets every module loaded from a file inside it, except
    the installed packages of a virtual environment kept in that folder. The
    recipes and tasks resolved from the forgotten modules are forgotten with them. fairtrial's
    own modules (its built-in recipes and tasks) are never forgotten: objects of a forgotten
    module's classes would no longer be those of its new copy. Returns the module names
    forgotten from ``sys.modules``, sorted.
    """
    if isinstance(target, ModuleType):
        target = target.__name__
    if isinstance(target, str):
        top = _top(target)
        if not top:
            raise ValueError(f"forget_modules: {target!r} names no module")
        names = [n for n in sys.modules if n == top or n.startswith(top + ".")]
        tops = {top}
    else:
        folder = Path(target).resolve()
        installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        names = []
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if not isinstance(file, str):
                continue
            path = Path(file).resolve()
            if path.is_relative_to(folder) and not any(path.is_relative_to(p) for p in installed):
                names.append(name)
        tops = {_top(n) for n in names}
    names = [n for n in names if _top(n) != "fairtrial"]
    tops.discard("fairtrial")
    for name in names:
        sys.modules.pop(name, None)
    for key in [k for k in _OBJECTS if ":" in k[1] and _top(k[1]) in tops]:
        del _OBJECTS[key]
    importlib.invalidate_caches()
    return sorted(names)


def _forget_if_stale(module_name: str, local: Path) -> None:
    """Forget a cached module that came from another folder, or from an older version of the
    file.

    Modules are cached by name for the whole process: without this, a long-lived process (the
    inline backend, a notebook, a test session) that runs two specs with a ``toy.py`` each
    would run the first folder's ``toy`` for both.
    """
    module = sys.modules.get(module_name)
    if module is None:
        return
    file = getattr(module, "__file__", None)
    same = file is not None and Path(file).resolve() == local
    if same and getattr(module, "__fairtrial_mtime__", None) in (None, local.stat().st_mtime_ns):
        return
    forget_modules(module_name)


def import_object(ref: str, base_dir: Path | None, what: str) -> object:
    """Import ``module:attr``, looking in ``base_dir`` (the spec's folder) first."""
    from fairtrial.provenance import module_source

    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} '{ref}' is not of the form 'module:function'")
    added = False
    local: Path | None = None
    if base_dir is not None:
        path = str(Path(base_dir).resolve())
        local = module_source(module_name, Path(path))
        if local is not None:
            _forget_if_stale(module_name, local)
        if path not in sys.path:
            sys.path.insert(0, path)
            added = True
    try:
        module = importlib.import_module(module_name)
        if local is not None and not hasattr(module, "__fairtrial_mtime__"):
            module.__fairtrial_mtime__ = local.stat().st_mtime_ns  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ValueError(f"{what} '{ref}': cannot import module '{module_name}' ({exc})") from exc
    finally:
        if added:
            sys.path.remove(str(Path(base_dir).resolve()))  # type: ignore[arg-type]
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ValueError(f"{what} '{ref}': module '{module_name}' has no '{attr}'") from None
    return obj
