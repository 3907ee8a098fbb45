"""Find a task by name: a built-in one, or ``module:function`` from the user's own code."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from fairtrial.errors import TaskError
from fairtrial.tasks.base import Task

TaskFactory = Callable[[], Task]
_BUILTIN: dict[str, TaskFactory] = {}
#: Built-in tasks that are generated procedurally and can be drawn afresh: ``name@DRAW``.
_REDRAW: dict[str, Callable[[int], Task]] = {}
_CACHE: dict[tuple[str, str], Task] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a built-in task factory under ``name``."""

    def deco(fn: TaskFactory) -> TaskFactory:
        _BUILTIN[name] = fn
        return fn

    return deco


def register_redraw(name: str) -> Callable[[Callable[[int], Task]], Callable[[int], Task]]:
    """Register how built-in task ``name`` is drawn afresh: ``factory(draw) -> Task``.

    ``get_task("NAME@DRAW")`` then returns draw ``DRAW`` (a whole number >= 0): new data from
    the same generating process (and/or a new split), for replications that test whether a
    result generalises beyond one draw of the data.
    """

    def deco(fn: Callable[[int], Task]) -> Callable[[int], Task]:
        _REDRAW[name] = fn
        return fn

    return deco


def redrawable_tasks() -> list[str]:
    """Names of the built-in tasks whose data can be drawn afresh (``name@draw``)."""
    _load_builtins()
    return sorted(_REDRAW)


def builtin_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    _load_builtins()
    return sorted(_BUILTIN)


def _load_builtins() -> None:
    import fairtrial.tasks.builtin  # noqa: F401  (registers on import)


def _forget_if_stale(module_name: str, local: Path) -> None:
    """Drop a cached module that came from another folder, or from an older version of the file.

    Modules are cached by name for the whole process: without this, a long-lived process (the
    inline backend, a notebook, a test session) that runs two specs with a ``toy.py`` each
    would run the first folder's ``toy`` for both, and an edited recipe would not be re-read.
    """
    module = sys.modules.get(module_name)
    if module is None:
        return
    file = getattr(module, "__file__", None)
    same = file is not None and Path(file).resolve() == local
    if same and getattr(module, "__fairtrial_mtime__", None) in (None, local.stat().st_mtime_ns):
        return
    top = module_name.split(".")[0]
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


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


def get_task(ref: str, base_dir: Path | None = None) -> Task:
    """Return the task named ``ref`` (built-in name or ``module:function``), cached per process."""
    key = (ref, str(base_dir) if ":" in ref else "")
    if key in _CACHE:
        return _CACHE[key]
    if ":" in ref:
        try:
            factory = import_object(ref, base_dir, "task")
        except ValueError as exc:
            raise TaskError(str(exc)) from None
        if not callable(factory):
            raise TaskError(f"task '{ref}' is not callable; it must be a function returning a Task")
        task = factory()
        if not isinstance(task, Task):
            raise TaskError(
                f"task '{ref}' returned {type(task).__name__}; it must return fairtrial.Task "
                "(build one with Task.from_arrays)"
            )
    elif "@" in ref:
        _load_builtins()
        name, _, draw = ref.partition("@")
        if name not in _BUILTIN:
            raise TaskError(
                f"unknown task '{name}' in '{ref}'; valid: {', '.join(sorted(_BUILTIN))}"
            )
        if name not in _REDRAW:
            raise TaskError(
                f"task '{name}' is a fixed dataset: its data cannot be drawn afresh "
                f"('{ref}'); tasks that can: {', '.join(sorted(_REDRAW))}"
            )
        if not (draw.isascii() and draw.isdigit()):
            raise TaskError(f"task '{ref}': the draw after '@' must be a whole number >= 0")
        task = _REDRAW[name](int(draw))
    else:
        _load_builtins()
        if ref not in _BUILTIN:
            raise TaskError(
                f"unknown task '{ref}'; valid: {', '.join(sorted(_BUILTIN))}, "
                "or 'module:function' for your own"
            )
        task = _BUILTIN[ref]()
    _CACHE[key] = task
    return task
