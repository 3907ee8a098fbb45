"""Nested tables and dotted keys: ``{"optim": {"lr": 0.1}}`` <-> ``{"optim.lr": 0.1}``.

A spec's arms change dotted keys of the baseline's config; the TOML writer writes tables back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b": value}; tables become dotted keys."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def set_dotted(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at the dotted key ``dotted`` of ``mapping``, making tables on the way."""
    parts = dotted.split(".")
    for p in parts[:-1]:
        mapping = mapping.setdefault(p, {})
    mapping[parts[-1]] = value
