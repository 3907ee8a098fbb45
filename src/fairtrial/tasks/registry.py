"""Find a task by name: a built-in one, or ``module:function`` from the user's own code."""

from __future__ import annotations

from pathlib import Path

from fairtrial.errors import TaskError
from fairtrial.tasks.base import Task
from fairtrial.tasks.catalog import BUILTIN, REDRAW, TaskFactory, register_redraw, register_task
from fairtrial.tasks.external import ExternalTask, is_external
from fairtrial.usercode import cached, import_object

#: built-in tasks built in this process (user tasks are cached by fairtrial.usercode)
_CACHE: dict[str, Task] = {}

__all__ = [
    "TaskFactory",
    "builtin_tasks",
    "get_task",
    "import_object",
    "redrawable_tasks",
    "register_redraw",
    "register_task",
]


def redrawable_tasks() -> list[str]:
    """Names of the built-in tasks whose data can be drawn afresh (``name@draw``)."""
    _load_builtins()
    return sorted(REDRAW)


def builtin_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    _load_builtins()
    return sorted(BUILTIN)


def _load_builtins() -> None:
    import fairtrial.tasks.builtin
    import fairtrial.tasks.env
    import fairtrial.tasks.packaged  # noqa: F401


def get_task(ref: str, base_dir: Path | None = None) -> Task:
    """Return the task named ``ref`` (built-in name, ``gym:ID``, ``module:function`` or
    ``external:NAME``), cached per process (:func:`fairtrial.usercode.forget_modules` forgets a
    user task, to import it afresh)."""
    if is_external(ref):  # data the recipe holds itself: nothing to build or cache
        return ExternalTask.named(ref)
    if ref.startswith("gym:"):
        if ref not in _CACHE:
            from fairtrial.tasks.env import gym_task

            _CACHE[ref] = gym_task(ref)
        return _CACHE[ref]
    if ":" in ref:
        return cached("task", ref, str(base_dir), lambda: _user_task(ref, base_dir))
    if ref not in _CACHE:
        _CACHE[ref] = _builtin_task(ref)
    return _CACHE[ref]


def _user_task(ref: str, base_dir: Path | None) -> Task:
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
    return task


def _builtin_task(ref: str) -> Task:
    _load_builtins()
    if "@" in ref:
        name, _, draw = ref.partition("@")
        if name not in BUILTIN:
            raise TaskError(
                f"unknown task '{name}' in '{ref}'; valid: {', '.join(sorted(BUILTIN))}"
            )
        if name not in REDRAW:
            raise TaskError(
                f"task '{name}' is a fixed dataset: its data cannot be drawn afresh "
                f"('{ref}'); tasks that can: {', '.join(sorted(REDRAW))}"
            )
        if not (draw.isascii() and draw.isdigit()):
            raise TaskError(f"task '{ref}': the draw after '@' must be a whole number >= 0")
        return REDRAW[name](int(draw))
    if ref not in BUILTIN:
        raise TaskError(
            f"unknown task '{ref}'; valid: {', '.join(sorted(BUILTIN))}, "
            "or 'module:function' for your own"
        )
    return BUILTIN[ref]()
