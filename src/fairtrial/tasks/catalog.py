"""The built-in tasks by name, filled by :mod:`fairtrial.tasks.builtin` as it is imported.

Apart from :mod:`fairtrial.tasks.registry` (which looks tasks up, and imports the built-in
ones on first use) so that the built-in tasks register without importing the registry back.
"""

from __future__ import annotations

from collections.abc import Callable

from fairtrial.tasks.base import Task

TaskFactory = Callable[[], Task]
BUILTIN: dict[str, TaskFactory] = {}
#: Built-in tasks that are generated procedurally and can be drawn afresh: ``name@DRAW``.
REDRAW: dict[str, Callable[[int], Task]] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a built-in task factory under ``name``."""

    def deco(fn: TaskFactory) -> TaskFactory:
        BUILTIN[name] = fn
        return fn

    return deco


def register_redraw(name: str) -> Callable[[Callable[[int], Task]], Callable[[int], Task]]:
    """Register how built-in task ``name`` is drawn afresh: ``factory(draw) -> Task``.

    ``get_task("NAME@DRAW")`` then returns draw ``DRAW`` (a whole number >= 0): new data from
    the same generating process (and/or a new split), for replications that test whether a
    result generalises beyond one draw of the data.
    """

    def deco(fn: Callable[[int], Task]) -> Callable[[int], Task]:
        REDRAW[name] = fn
        return fn

    return deco
