"""How a spec error is written: one line (control and invisible characters escaped), with
the line of the table or key it is about, and the values it quotes shown as TOML-like text,
clipped when long. Every :class:`~fairtrial.errors.SpecError` the loader raises is made by
:func:`spec_error`.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from fairtrial.errors import SpecError


def _line_of(text: str, table: str, key: str | None = None) -> int | None:
    """Best-effort line number of ``key`` inside ``[table]`` (or of the table header)."""
    header_re = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?$")
    current = ""
    header_line = None
    first = key.split(".")[0] if key else None
    for no, line in enumerate(text.splitlines(), 1):
        m = header_re.match(line)
        if m:
            current = m.group(1).replace('"', "").replace(" ", "")
            if current == table and header_line is None:
                header_line = no
            continue
        if current == table and first is not None:
            m = re.match(r"^\s*\"?([A-Za-z0-9_.\-]+)\"?\s*=", line)
            if m and (m.group(1) == key or m.group(1).split(".")[0] == first):
                return no
    return header_line


def _one_line(message: str) -> str:
    """``message`` with every control or invisible character escaped (``\\n``, ``\\x00``,
    ``\\u202e``): an error quotes what the spec holds, and stays one honest line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def spec_error(message: str) -> SpecError:
    """The :class:`SpecError` for ``message``, made one line."""
    return SpecError(_one_line(message))


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(names: Iterable[str], most: int = 20) -> str:
    """``a, b, c`` for a message; the first ``most`` and a count of the rest."""
    names = list(names)
    rest = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(_clip(n) for n in names[:most]) + rest


def _show(value: Any) -> str:
    """A spec value as TOML-like text for a message (JSON for most, clipped when long)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML spells them nan, inf, -inf
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    try:
        shown = json.dumps(value, default=str)
    except ValueError:  # an int too long to print, a list nested too deep
        shown = f"<{type(value).__name__}>"
    return _clip(shown)
