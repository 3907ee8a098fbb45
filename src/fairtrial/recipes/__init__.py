"""Recipes: the training code. Built-in ones are short files meant to be copied.

A recipe is ``train(config, ctx)``. Decorating it with :func:`recipe` declares a dataclass
of its options: the spec is then checked against the fields (unknown key, wrong type) before
any trial runs, and ``train`` receives an instance of the dataclass instead of a mapping.
Every field carries its documentation in ``metadata={"help": ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fairtrial.context import TrialContext

C = TypeVar("C")

#: Built-in recipes: short name -> "module:function".
BUILTIN_RECIPES: dict[str, str] = {
    "logistic": "fairtrial.recipes.sklearn:logistic",
    "gradient_boosting": "fairtrial.recipes.sklearn:gradient_boosting",
    "mlp": "fairtrial.recipes.mlp:train",
    "cnn1d": "fairtrial.recipes.cnn1d:train",
    "cnn2d": "fairtrial.recipes.cnn2d:train",
    "transformer": "fairtrial.recipes.transformer:train",
    "reinforce": "fairtrial.recipes.reinforce:train",
    "sb3_ppo": "fairtrial.recipes.sb3:ppo",
    "sb3_dqn": "fairtrial.recipes.sb3:dqn",
}


class ConfigError(ValueError):
    """A config value does not fit the recipe's declared options (names key and fix)."""


def recipe(
    config_class: type[C],
) -> Callable[[Callable[[C, TrialContext], Any]], Callable[..., Any]]:
    """Declare ``config_class`` (a dataclass) as the options of the decorated recipe."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError("recipe() takes a dataclass")

    def deco(fn: Callable[[C, TrialContext], Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(config: Mapping[str, Any] | C, ctx: TrialContext) -> Any:
            if not isinstance(config, config_class):
                config = build_config(config_class, config)  # type: ignore[arg-type]
            return fn(config, ctx)  # type: ignore[arg-type]

        wrapper.config_class = config_class  # type: ignore[attr-defined]
        return wrapper

    return deco


class NotVectorizable(Exception):
    """Raised by a recipe's ``train_vectorized`` when a config cannot be trained batched.

    The vectorized backend then runs that arm's seeds one after another with ``train`` and
    says why (the message), so results never change because of the backend.
    """


def vectorized(
    train: Callable[..., Any],
    *,
    varies: Sequence[str] = (),
    structure: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[[Any, Sequence[TrialContext]], Any]], Callable[..., Any]]:
    """Declare the decorated ``train_many(configs, ctxs)`` as ``train``'s batched form.

    The vectorized backend (``fairtrial run --backend vectorized``) calls it with one config
    and one context per member (``configs[i]`` is the config of the trial ``ctxs[i]`` runs)
    instead of calling ``train(configs[i], ctxs[i])`` once per trial. Members are seeds of one
    arm and, when the recipe names in ``varies`` the options its batched form can take per
    member (learning rate, weight decay, ...), trials of every arm whose configs differ only
    in those options; trials of one arm come next to each other, in seed order. When a value
    of a varying option still changes the model's layers (a dropout rate of 0 means no dropout
    layer at all), ``structure(config)`` says what must also be equal (``cfg.dropout > 0``).

    It must give every member what ``train`` would: weights from that seed's own "init"
    stream, batches from its own "data" stream, the same log points, and one
    ``ctx.evaluate_test`` per context. It raises :class:`NotVectorizable` (before touching any
    context) for configs it cannot batch; the trials then run one by one. When ``train``
    declared a config dataclass with :func:`recipe`, ``train_many`` receives instances of it.
    """

    def deco(fn: Callable[[Any, Sequence[TrialContext]], Any]) -> Callable[..., Any]:
        cls = config_class_of(train)
        if cls is not None:
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(varies) - names)
            if unknown:
                raise TypeError(f"varies names options {cls.__name__} does not have: {unknown}")

        @functools.wraps(fn)
        def wrapper(configs: Sequence[Any], ctxs: Sequence[TrialContext]) -> Any:
            if cls is not None:
                configs = [c if isinstance(c, cls) else build_config(cls, c) for c in configs]
            return fn(configs, ctxs)

        wrapper.varies = tuple(varies)  # type: ignore[attr-defined]
        wrapper.structure = structure  # type: ignore[attr-defined]
        train.train_vectorized = wrapper  # type: ignore[attr-defined]
        return wrapper

    return deco


def vectorized_form(fn: object) -> Callable[..., Any] | None:
    """The batched form a recipe declared with :func:`vectorized` (or set itself), or None."""
    form = getattr(fn, "train_vectorized", None)
    return form if callable(form) else None


def config_class_of(fn: object) -> type | None:
    """The dataclass a recipe declared with :func:`recipe`, or None."""
    cls = getattr(fn, "config_class", None)
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


#: Whole-number options are 64-bit (what TOML, numpy and torch hold).
INT_RANGE = (-(2**63), 2**63 - 1)
#: Field metadata keys that bound a number option (or each number of a list option).
BOUND_KEYS = ("ge", "gt", "le", "lt")


def _check_value(name: str, value: Any, annotation: Any, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_value(name, value, opt, meta)
            except ConfigError:
                continue
        raise ConfigError(f"'{name}' must be {_type_name(annotation, meta)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"'{name}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
            )
        return value
    if origin in (tuple, list):
        items = typing.get_args(annotation) or (Any,)
        fixed = origin is tuple and Ellipsis not in items
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(items)):
            raise ConfigError(f"'{name}' must be {_type_name(annotation, meta)}, got {value!r}")
        try:
            if fixed:
                return tuple(
                    _check_value(name, v, t, meta) for v, t in zip(value, items, strict=True)
                )
            return origin(_check_value(name, v, items[0], meta) for v in value)
        except ConfigError:  # name the whole option's type, not one item's
            raise ConfigError(
                f"'{name}' must be {_type_name(annotation, meta)}, got {value!r}"
            ) from None
    if annotation is float:
        # NaN and infinities pass every comparison test or none: they are never a setting
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be {_type_name(float, meta)}, got {value!r}")
        if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ConfigError(f"'{name}' must be {_type_name(float, meta)}, got {value!r}")
        if not math.isfinite(value) or not _in_bounds(value, meta):
            raise ConfigError(f"'{name}' must be {_type_name(float, meta)}, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be {_type_name(int, meta)}, got {value!r}")
        if not INT_RANGE[0] <= value <= INT_RANGE[1] or not _in_bounds(value, meta):
            raise ConfigError(f"'{name}' must be {_type_name(int, meta)}, got {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise ConfigError(f"'{name}' must be {_type_name(annotation)}, got {value!r}")
        return value
    return value


def _in_bounds(value: float, meta: Mapping[str, Any]) -> bool:
    ge, gt, le, lt = (meta.get(k) for k in BOUND_KEYS)
    return (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )


def _bounds_text(meta: Mapping[str, Any]) -> str:
    """The declared range, e.g. " from 1 to 65536" or " >= 0 and < 1"; "" when unbounded."""
    ge, gt, le, lt = (meta.get(k) for k in BOUND_KEYS)
    if ge is not None and le is not None:
        return f" from {_num(ge)} to {_num(le)}"
    bounds = ((">=", ge), (">", gt), ("<=", le), ("<", lt))
    parts = [f"{op} {_num(v)}" for op, v in bounds if v is not None]
    return " " + " and ".join(parts) if parts else ""


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _type_name(annotation: Any, meta: Mapping[str, Any] | None = None) -> str:
    bounds = _bounds_text(meta or {})
    names = {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}
    if annotation in (float, int):
        return names[annotation] + bounds
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f'"{c}"' for c in typing.get_args(annotation))
    if origin in (tuple, list):
        items = typing.get_args(annotation)
        plural = _type_name(items[0]).removeprefix("a ") + "s"
        fixed = origin is tuple and Ellipsis not in items
        listed = f"a list of {len(items)} {plural}" if fixed else f"a list of {plural}"
        return listed + (f", each{bounds}" if bounds else "")
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(
            "none" if a is type(None) else _type_name(a, meta) for a in typing.get_args(annotation)
        )
    return str(annotation)


def build_config(config_class: type[C], values: Mapping[str, Any]) -> C:
    """Make a ``config_class`` from a mapping, checking names, types and declared ranges.

    Every number must be finite and whole numbers 64-bit; a field's ``metadata`` may bound it
    with ``ge``/``gt``/``le``/``lt`` (each item, for a list), and name a ``check(value)`` that
    raises ValueError with the reason. A ValueError from the class itself (its
    ``__post_init__``: options that must agree) is a config error too. Raises ConfigError.
    """
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown option '{key}'; valid: {', '.join(sorted(fields))}")
        meta = fields[key].metadata
        kwargs[key] = _check_value(key, value, hints[key], meta)
        check = meta.get("check")
        if check is not None:
            try:
                check(kwargs[key])
            except ValueError as exc:
                raise ConfigError(f"'{key}' {exc}, got {value!r}") from None
    try:
        return config_class(**kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def describe_config(config_class: type) -> list[dict[str, Any]]:
    """One row per option: name, type, default and help (for the docs and ``fairtrial recipes``)."""
    hints = typing.get_type_hints(config_class)
    rows = []
    for f in dataclasses.fields(config_class):
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        rows.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name], f.metadata),
                "default": default,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def summary(fn: Any) -> str:
    """First line of a recipe's docstring, else of its module's."""
    import sys

    for doc in (fn.__doc__, getattr(sys.modules.get(fn.__module__), "__doc__", None)):
        if doc and doc.strip():
            return str(doc).strip().splitlines()[0]
    return ""


def options_markdown() -> str:
    """Markdown tables of every built-in recipe's options (the README's section is this)."""
    import json

    from fairtrial.usercode import import_object

    out = []
    for name, ref in BUILTIN_RECIPES.items():
        fn = import_object(ref, None, "recipe")
        out += [f"#### `{name}` (`{ref}`)", "", summary(fn), ""]
        out += ["| option | type | default | meaning |", "|---|---|---|---|"]
        cls = config_class_of(fn)
        for row in describe_config(cls) if cls else []:
            out.append(
                f"| `{row['name']}` | {row['type']} | `{json.dumps(row['default'])}` "
                f"| {row['help']} |"
            )
        out.append("")
    return "\n".join(out)


__all__ = [
    "BUILTIN_RECIPES",
    "ConfigError",
    "NotVectorizable",
    "build_config",
    "config_class_of",
    "describe_config",
    "options_markdown",
    "recipe",
    "vectorized",
    "vectorized_form",
]
