"""Typed JSON records: frozen dataclasses that read and write the result document.

:class:`Record` is the base of every part of :class:`fairtrial.results.Analysis`: fields map to
JSON keys of the same name, nested records and lists and maps of them are read back typed, and
keys a newer version wrote are kept (``extra``) and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from fairtrial.errors import BundleError

R = TypeVar("R", bound="Record")


class ShapeError(BundleError, ValueError):
    """A result document whose shape does not fit the schema (names the key); result documents
    come from outside (a bundle, an upload), so this is the bundle's error."""


class Record:
    """Typed JSON: fields in order, nested records, lists and maps of records, unknown keys kept.

    Every field of a subclass maps to the JSON key of the same name. A field with
    ``metadata={"omit_none": True}`` is left out of the JSON when it is None (an ablation has
    ``removed``, a comparison of arms does not).
    """

    __dataclass_fields__: ClassVar[dict[str, Any]]
    #: keys a document held that this class does not know (a newer version's): kept as they are
    extra: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _dump(value)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any], where: str = "") -> R:
        if not isinstance(data, Mapping):
            raise ShapeError(f"{where or cls.__name__}: expected an object, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra" or f.name not in data:
                continue
            kwargs[f.name] = _load(hints[f.name], data[f.name], f"{where}.{f.name}".lstrip("."))
        kwargs["extra"] = {k: v for k, v in data.items() if k not in names}
        return cls(**kwargs)

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes`` (records are frozen)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _load(hint: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        for h in options:
            if isinstance(h, type) and issubclass(h, Record) and isinstance(value, Mapping):
                return h.from_dict(value, where)
        return _load(options[0], value, where) if len(options) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ShapeError(f"{where}: expected a list, got {_kind(value)}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        loaded = [_load(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(loaded) if origin is tuple else loaded
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ShapeError(f"{where}: expected an object, got {_kind(value)}")
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _load(item, v, f"{where}.{k}") for k, v in value.items()}
    return value


Interval = tuple[float | None, float | None]
