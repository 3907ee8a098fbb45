"""Checks of the recipe and task a spec names, made before any of their code runs where
possible: a ``module:function`` reference must be dotted Python names outside the standard
library and outside fairtrial's other modules, a ``NAME@DRAW`` task's draw a whole number,
and what the reference imports must be a function that can be called as a recipe
(``train(config, ctx)``) or a task factory (no arguments).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from fairtrial.recipes import BUILTIN_RECIPES
from fairtrial.spec.limits import NAME_RULE, ROOT_SEED_END, valid_name
from fairtrial.tasks import import_object
from fairtrial.tasks.external import PREFIX, is_external

_RECIPE_VALID = (
    f"a built-in recipe ({', '.join(sorted(BUILTIN_RECIPES))}) or 'module:function' naming "
    "a function train(config, ctx) in a module beside the spec or in an installed package"
)
_TASK_VALID = (
    "a built-in task (fairtrial tasks), NAME@DRAW for a fresh draw of one, gym:ID for a "
    "Gymnasium environment, 'module:function' naming a function that returns a "
    "fairtrial.Task, or 'external:NAME' for data the recipe loads and evaluates itself"
)


def _ref_problem(ref: str, what: str, own: str) -> str | None:
    """Why ``module:function`` cannot name a user's recipe or task, found before importing
    anything (an import runs the module's code): None when it may.

    The standard library holds neither (and importing some of it has effects of its own),
    nor does fairtrial outside package ``own``.
    """
    module, _, attr = ref.partition(":")
    if not all(part.isidentifier() for part in [*module.split("."), *attr.split(".")]):
        return "is not of the form 'module:function' (dotted Python names)"
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return f"'{module}' is Python's standard library, which holds no {what}"
    if top == "fairtrial" and module != own and not module.startswith(own + "."):
        return f"fairtrial's own module '{module}' holds no {what}"
    return None


def _function_problem(fn: object, what: str, params: tuple[str, ...]) -> str | None:
    """Why ``fn`` is not a Python function that can be called with ``params``: None if it is."""
    if not inspect.isfunction(fn):
        name = type(fn).__name__
        kind = (
            "a class" if isinstance(fn, type)
            else "a built-in function" if inspect.isbuiltin(fn)
            else f"{'an' if name[:1] in 'aeiou' else 'a'} {name} object"
        )  # fmt: skip
        return f"is {kind}, not a {what} function"
    try:
        origin = str(getattr(inspect.unwrap(fn), "__module__", None) or "")
    except ValueError:  # a cycle of __wrapped__
        origin = ""
    if origin.split(".")[0] in sys.stdlib_module_names:
        return f"is '{origin}.{fn.__name__}' of Python's standard library, not a {what}"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # no signature to read: the call will tell
    try:
        signature.bind(*params)
    except TypeError:
        called = f"{fn.__name__}({', '.join(params)})"
        return f"is {fn.__name__}{signature}, which cannot be called as {called}"
    return None


def _task_ref_problem(ref: str, base_dir: Path | None) -> str | None:
    """Why task ``ref`` cannot be built, found before the task's code runs: None if it may."""
    if ref.startswith("gym:"):
        return None  # building it says whether Gymnasium knows the id
    if is_external(ref):
        if not valid_name(ref.removeprefix(PREFIX)):
            return f"the name after '{PREFIX}' must be {NAME_RULE}"
        return None
    if ":" in ref:
        if (problem := _ref_problem(ref, "task", "fairtrial.tasks")) is not None:
            return problem
        try:
            factory = import_object(ref, base_dir, "task")
        except ValueError as exc:
            return str(exc)
        except (Exception, SystemExit) as exc:  # the user's module raised on import
            return f"importing '{ref}' raised {exc!r}"
        return _function_problem(factory, "task", ())
    _, at, draw = ref.partition("@")
    # int() and str.isdigit() take any Unicode digit ("²", "٣"): a draw is ASCII digits
    if at and not (draw.isascii() and draw.isdigit() and int(draw) < ROOT_SEED_END):
        return f"the draw after '@' must be a whole number from 0 to {ROOT_SEED_END - 1}"
    return None
