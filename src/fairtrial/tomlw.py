"""The spec file writer: a normalised spec (:meth:`fairtrial.spec.Spec.normalized`) back as
TOML that :func:`fairtrial.spec.load_spec` reads to the same spec. It is a module of its own
because it is not about bundles: a bundle stores its experiment's spec with it
(``spec.toml``, what ``replicate`` runs), and anything else holding a normalised spec can
write it the same way, without importing the bundle reader. It writes only what a spec holds
(tables, strings, numbers, booleans, lists and inline tables) and refuses any other value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from fairtrial.dotted import flatten
from fairtrial.errors import BundleError

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_str(text: str) -> str:
    # JSON's string escapes are TOML's, except that TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    parts = key.split(".")
    if all(_BARE.fullmatch(p) for p in parts):
        return ".".join(parts)
    return _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_str(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise BundleError(f"cannot write {type(value).__name__} value {value!r} to a spec file")


def _toml_table(lines: list[str], header: str, values: Mapping[str, Any]) -> None:
    lines.append(f"[{header}]")
    for key, value in flatten(values).items():
        if value is None:
            continue
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines.append("")


def spec_toml(normalized: Mapping[str, Any]) -> str:
    """A spec file whose :meth:`~fairtrial.spec.Spec.normalized` form is ``normalized``."""
    lines = ["# written by fairtrial from an experiment's normalised spec", ""]
    exp = {k: v for k, v in normalized["experiment"].items() if v is not None}
    lines.append("[experiment]")
    for key, value in exp.items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    hyp = {k: v for k, v in normalized.get("hypothesis", {}).items() if v is not None}
    _toml_table(lines, "hypothesis", hyp)
    _toml_table(lines, "baseline", normalized.get("baseline", {}))
    for name, components in normalized.get("arms", {}).items():
        _toml_table(lines, f"arms.{_toml_key(name)}", components)
    design = normalized.get("design") or {}
    if normalized.get("ablations") or design:
        lines.append("[ablations]")
        if normalized.get("ablations"):
            lines.append(f"leave_one_out = {_toml_value(list(normalized['ablations']))}")
        for key, value in design.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    tuning = normalized.get("tuning")
    if tuning:
        lines.append("[tuning]")
        for key in ("budget", "sampler", "objective", "seeds", "root_seed"):
            lines.append(f"{key} = {_toml_value(tuning[key])}")
        lines.append("")
        _dims(lines, "tuning.space", tuning["space"])
        for name, space in (tuning.get("arms") or {}).items():
            _dims(lines, f"arms.{_toml_key(name)}.tuning.space", space)
    return "\n".join(lines)


def _dims(lines: list[str], header: str, space: Mapping[str, Any]) -> None:
    """A tuning space: one inline table per dimension, under its (dotted) key."""
    lines.append(f"[{header}]")
    for key, dim in space.items():
        lines.append(f"{_toml_str(key)} = {_toml_value(dim)}")
    lines.append("")
