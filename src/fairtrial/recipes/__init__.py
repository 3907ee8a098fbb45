"""Recipes: the training code. Built-in ones are short files meant to be copied.

A recipe is ``train(config, ctx)``. Decorating it with :func:`recipe` declares a dataclass
of its options: the spec is then checked against the fields (unknown key, wrong type) before
any trial runs, and ``train`` receives an instance of the dataclass instead of a mapping.
Every field carries its documentation in ``metadata={"help": ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C")

#: Built-in recipes: short name -> "module:function".
BUILTIN_RECIPES: dict[str, str] = {
    "logistic": "fairtrial.recipes.sklearn:logistic",
    "gradient_boosting": "fairtrial.recipes.sklearn:gradient_boosting",
    "mlp": "fairtrial.recipes.mlp:train",
    "cnn1d": "fairtrial.recipes.cnn1d:train",
    "transformer": "fairtrial.recipes.transformer:train",
}


class ConfigError(ValueError):
    """A config value does not fit the recipe's declared options (names key and fix)."""


def recipe(config_class: type[C]) -> Callable[[Callable[[C, Any], Any]], Callable[..., Any]]:
    """Declare ``config_class`` (a dataclass) as the options of the decorated recipe."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError("recipe() takes a dataclass")

    def deco(fn: Callable[[C, Any], Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(config: Mapping[str, Any] | C, ctx: Any) -> Any:
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
) -> Callable[[Callable[[Any, Sequence[Any]], Any]], Callable[..., Any]]:
    """Declare the decorated ``train_many(config, ctxs)`` as ``train``'s batched form.

    The vectorized backend (``fairtrial run --backend vectorized``) calls it with the arm's
    config and one context per seed (``ctxs[i].seed`` differ, the config is the same) instead
    of calling ``train(config, ctx)`` once per seed. It must give every seed what ``train``
    would: weights from that seed's own "init" stream, batches from its own "data" stream, the
    same log points, and one ``ctx.evaluate_test`` per context. It raises
    :class:`NotVectorizable` (before touching any context) for configs it cannot batch; the
    seeds then run one by one. When ``train`` declared a config dataclass with :func:`recipe`,
    ``train_many`` receives an instance of it.
    """

    def deco(fn: Callable[[Any, Sequence[Any]], Any]) -> Callable[..., Any]:
        cls = config_class_of(train)

        @functools.wraps(fn)
        def wrapper(config: Any, ctxs: Sequence[Any]) -> Any:
            if cls is not None and not isinstance(config, cls):
                config = build_config(cls, config)
            return fn(config, ctxs)

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


def _check_value(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_value(name, value, opt)
            except ConfigError:
                continue
        raise ConfigError(f"'{name}' must be {_type_name(annotation)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"'{name}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{name}' must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return origin(_check_value(name, v, item) for v in value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be a whole number, got {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise ConfigError(f"'{name}' must be {_type_name(annotation)}, got {value!r}")
        return value
    return value


def _type_name(annotation: Any) -> str:
    names = {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f'"{c}"' for c in typing.get_args(annotation))
    if origin in (tuple, list):
        items = typing.get_args(annotation)
        plural = _type_name(items[0]).removeprefix("a ") + "s"
        fixed = origin is tuple and Ellipsis not in items
        return f"a list of {len(items)} {plural}" if fixed else f"a list of {plural}"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(
            "none" if a is type(None) else _type_name(a) for a in typing.get_args(annotation)
        )
    return str(annotation)


def build_config(config_class: type[C], values: Mapping[str, Any]) -> C:
    """Make a ``config_class`` from a mapping, checking names and types; raises ConfigError."""
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown option '{key}'; valid: {', '.join(sorted(fields))}")
        kwargs[key] = _check_value(key, value, hints[key])
    return config_class(**kwargs)


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
                "type": _type_name(hints[f.name]),
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

    from fairtrial.tasks import import_object

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
