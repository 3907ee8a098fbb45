"""The types of an uploaded bundle's rows, checked before the registry reads a field.

A bundle comes from anyone: every field of its experiment and trials that the registry reads
is checked for type and range first, so a malformed upload is refused with one line naming
the member and the field, never a server error.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, TrialRow

#: the largest whole number the registry's integer columns hold (PostgreSQL ``integer``)
_MAX_INT = 2**31 - 1
_KINDS = {str: "a string", int: "a whole number", float: "a number", dict: "an object"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass field's type (``str``, ``int``, ``float``,
    ``dict[...]``, ``X | None``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    hint = typing.get_origin(hint) or hint
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)


def _expected(hint: Any) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_expected(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return _KINDS.get(typing.get_origin(hint) or hint, str(hint))


def _check_fields(row: Any, member: str, where: str) -> None:
    """Raise naming the first field of the dataclass ``row`` whose value has the wrong type."""
    hints = typing.get_type_hints(type(row))
    for f in dataclasses.fields(row):
        value = getattr(row, f.name)
        if not _fits(value, hints[f.name]):
            raise BundleError(
                f"{member}: {where}'{f.name}' is {_json_type(value)}, expected "
                f"{_expected(hints[f.name])}"
            )


def _check_rows(exp: ExperimentRow, trials: list[TrialRow]) -> None:
    """The types (and ranges) of every field of the experiment and its trials that the
    registry reads, so that a malformed bundle is refused naming the field."""
    _check_fields(exp, "experiment.json", "")
    spec = exp.spec
    for table in ("experiment", "hypothesis", "baseline", "arms"):
        if not isinstance(spec.get(table, {}), dict):
            raise BundleError(
                f"experiment.json: spec.{table} is {_json_type(spec[table])}, expected an object"
            )
    if "experiment" not in spec:
        raise BundleError("experiment.json: the spec has no 'experiment' table")
    hyp = spec.get("hypothesis", {})
    for key, low, high in (("alpha", 0.0, 1.0), ("power", 0.0, 1.0)):
        v = hyp.get(key)
        if v is not None and not (_fits(v, float) and low < v < high):
            raise BundleError(
                f"experiment.json: spec.hypothesis.{key} is {str(v)[:40]!r}, expected a number "
                f"between {low:g} and {high:g}"
            )
    se = hyp.get("smallest_effect")
    if se is not None and not (_fits(se, float) and math.isfinite(se) and se >= 0):
        raise BundleError(
            f"experiment.json: spec.hypothesis.smallest_effect is {str(se)[:40]!r}, expected a "
            "number >= 0"
        )
    if not isinstance(hyp.get("claim") or "", str):
        raise BundleError("experiment.json: spec.hypothesis.claim is not a string")
    if exp.direction not in ("max", "min"):
        raise BundleError(
            f"experiment.json: 'direction' is {exp.direction[:20]!r}, expected 'max' or 'min'"
        )
    if not (0 <= exp.seeds <= _MAX_INT):
        raise BundleError(f"experiment.json: 'seeds' is {exp.seeds}, expected 0..{_MAX_INT}")
    for name, limit in (("metric", 64), ("id", 64), ("spec_hash", 64)):
        if len(getattr(exp, name)) > limit:
            raise BundleError(f"experiment.json: '{name}' is longer than {limit} characters")
    arms = exp.arms.get("arms")
    if not isinstance(arms, list) or not arms:
        raise BundleError("experiment.json: 'arms.arms' is not a list of arms")
    names: set[str] = set()
    for i, a in enumerate(arms):
        if not (
            isinstance(a, dict)
            and isinstance(a.get("name"), str)
            and a.get("kind") in ("baseline", "arm", "ablation", "design")
            and isinstance(a.get("components"), dict)
        ):
            raise BundleError(
                f"experiment.json: arms.arms[{i}] is not an arm (name, kind baseline/arm/"
                "ablation/design, components)"
            )
        if a["name"] in names:
            raise BundleError(f"experiment.json: arm '{a['name'][:80]}' is listed twice")
        names.add(a["name"])
    if not isinstance(exp.arms.get("ablations", []), list) or not all(
        isinstance(ab, dict) for ab in exp.arms.get("ablations", [])
    ):
        raise BundleError("experiment.json: 'arms.ablations' is not a list of ablations")
    seen: set[str] = set()
    for i, t in enumerate(trials):
        _check_fields(t, "results/trials.json", f"trial {i}: ")
        if not (0 <= t.seed <= _MAX_INT and 0 <= t.attempt <= _MAX_INT):
            raise BundleError(
                f"results/trials.json: trial {t.id[:80]}: seed and attempt must be 0..{_MAX_INT}"
            )
        if len(t.status) > 16:
            raise BundleError(
                f"results/trials.json: trial {t.id[:80]}: status {t.status[:20]!r}... is not a "
                "trial status"
            )
        if t.id in seen:
            raise BundleError(f"results/trials.json: trial {t.id[:80]} is listed twice")
        seen.add(t.id)
