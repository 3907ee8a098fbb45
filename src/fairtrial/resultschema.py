"""The result document's schema in words: ``docs/results-schema.md`` is generated from the
records :mod:`fairtrial.results` lists (``python -m fairtrial.results``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from fairtrial.typed import Record


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        inner = " | ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
        return f"{inner} or null"
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
            return f"[{_type_name(args[0])}, {_type_name(args[1])}]"
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        args = typing.get_args(hint)
        return f"object of {_type_name(args[1])}" if len(args) == 2 else "object"
    if isinstance(hint, type) and issubclass(hint, Record):
        return f"[{hint.__name__}](#{hint.__name__.lower()})"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint is Any:
        return "any"
    if typing.get_origin(hint) is Mapping:
        return "object"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def schema_markdown(classes: Sequence[type[Record]], version: int) -> str:
    """The result document's schema as Markdown (``docs/results-schema.md``)."""
    out = [
        "# The result document",
        "",
        "What `fairtrial report --format json` prints, what a bundle holds as "
        "`results/analysis.json` and what `fairtrial.analyze()` returns (as typed objects of "
        "`fairtrial.results`). Keys are added between versions, never renamed or removed; "
        "a reader keeps keys it does not know. Generated from `fairtrial/results.py` by "
        "`python -m fairtrial.results > docs/results-schema.md`; a test keeps them equal.",
        "",
        f"Schema version: **{version}** (`schema_version`; documents without it are 1).",
        "Fields marked *optional* are absent when they do not apply.",
        "",
    ]
    for cls in classes:
        hints = typing.get_type_hints(cls)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"## {cls.__name__}", "", doc, "", "| key | type | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            kind = _type_name(hints[f.name])
            if f.metadata.get("omit_none"):
                kind += " (optional)"
            out.append(f"| `{f.name}` | {kind} | {f.metadata.get('doc', '')} |")
        out.append("")
    return "\n".join(out)
