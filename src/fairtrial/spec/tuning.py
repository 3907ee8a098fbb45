"""``[tuning]`` and ``[arms.NAME.tuning.space]``: the budget, sampler, objective and search
space of equal tuning, checked like the rest of the spec (one line naming the key and what
would be valid). Whether the recipe logs the objective is only known when it runs: the first
tuning trial that ends without it fails with the names it did log.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from fairtrial.spec.errors import _listed, _show
from fairtrial.spec.limits import ROOT_SEED_END
from fairtrial.spec.model import (
    SAMPLERS,
    Arm,
    Dim,
    TuningSpec,
    flatten,
    metric_direction,
    set_dotted,
)
from fairtrial.spec.reading import _Loader

#: the most configurations one arm may try
MAX_BUDGET = 10_000
MAX_TUNING_SEEDS = 100
_DIM_KEYS = ("low", "high", "log", "step", "int", "choices")


class _Tuning(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    budget: int
    sampler: str = "random"
    objective: str
    seeds: int = 1
    root_seed: int = 0
    space: dict[str, Any] = {}

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: int) -> int:
        if not 2 <= v <= MAX_BUDGET:
            raise ValueError(
                f"must be a whole number from 2 to {MAX_BUDGET} (configurations per arm; one "
                "configuration is no tuning)"
            )
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"must be one of {', '.join(repr(s) for s in SAMPLERS)}")
        return v

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str) -> str:
        if not v.strip() or len(v) > 200:
            raise ValueError('must name a metric the recipe logs, e.g. "val_accuracy"')
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int) -> int:
        if not 1 <= v <= MAX_TUNING_SEEDS:
            raise ValueError(f"must be a whole number from 1 to {MAX_TUNING_SEEDS}")
        return v

    @field_validator("root_seed")
    @classmethod
    def _root(cls, v: int) -> int:
        if not 0 <= v < ROOT_SEED_END:
            raise ValueError(f"must be a whole number from 0 to {ROOT_SEED_END - 1}")
        return v


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _dim(ld: _Loader, table: str, key: str, raw: Any, current: Any) -> Dim:
    """One dimension; ``current`` is the key's value in the baseline (or the recipe's default),
    whose type makes a range of whole numbers."""
    if not isinstance(raw, Mapping):
        raise ld.fail(
            table,
            f"{key} = {_show(raw)}",
            "must be a range {low = 0.001, high = 1.0, log = true} or {choices = [64, 128]}",
        )
    for k in raw:
        if k not in _DIM_KEYS:
            raise ld.fail(table, f"{key}.{k}", f"unknown key; valid: {', '.join(_DIM_KEYS)}")
    if "choices" in raw:
        choices = raw["choices"]
        if set(raw) != {"choices"}:
            raise ld.fail(table, key, "set either choices or a range (low, high), not both")
        if not isinstance(choices, list) or not choices:
            raise ld.fail(table, f"{key}.choices", "must be a non-empty list of values")
        for c in choices:
            if not isinstance(c, (str, int, float, bool)) or (
                isinstance(c, float) and not math.isfinite(c)
            ):
                raise ld.fail(
                    table, f"{key}.choices", f"{_show(c)}: choices are strings, numbers or booleans"
                )
        if len({repr(c) for c in choices}) != len(choices):
            raise ld.fail(table, f"{key}.choices", "lists a value twice")
        if len(choices) < 2:
            raise ld.fail(table, f"{key}.choices", "one choice is no tuning: list at least two")
        return Dim(choices=tuple(choices))
    for end in ("low", "high"):
        if end not in raw:
            raise ld.fail(table, key, f"missing '{end}' (a range is {{low = ..., high = ...}})")
        if not _number(raw[end]):
            raise ld.fail(table, f"{key}.{end} = {_show(raw[end])}", "must be a finite number")
    low, high = raw["low"], raw["high"]
    for flag in ("log", "int"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise ld.fail(table, f"{key}.{flag}", "must be true or false")
    integer = bool(raw.get("int", isinstance(current, int) and not isinstance(current, bool)))
    log = bool(raw.get("log", False))
    step = raw.get("step")
    if not low < high:
        raise ld.fail(table, key, f"empty range: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ld.fail(table, f"{key}.low = {low!r}", "a log range needs low > 0")
    if integer and not (float(low).is_integer() and float(high).is_integer()):
        why = "int = true" if "int" in raw else "the baseline value is one"
        raise ld.fail(
            table,
            key,
            f"is a range of whole numbers ({why}): low and high must be whole numbers "
            "(or set int = false)",
        )
    if step is not None:
        if not _number(step) or step <= 0:
            raise ld.fail(table, f"{key}.step = {_show(step)}", "must be a number > 0")
        if log:
            raise ld.fail(table, key, "step and log cannot be combined")
        if integer and not float(step).is_integer():
            raise ld.fail(
                table, f"{key}.step", "must be a whole number in a range of whole numbers"
            )
    if integer:
        return Dim(low=int(low), high=int(high), log=log, integer=True,
                   step=int(step) if step is not None else None)  # fmt: skip
    return Dim(low=float(low), high=float(high), log=log,
               step=float(step) if step is not None else None)  # fmt: skip


def _space(
    ld: _Loader,
    table: str,
    raw: Any,
    known: Mapping[str, Any],
    check: Callable[[str, dict[str, Any]], None],
    config: dict[str, Any],
) -> dict[str, Dim]:
    if not isinstance(raw, Mapping):
        raise ld.fail(None, None, f"'{table}' must be a table ([{table}])")
    dims = _dims_of(raw, known)
    out: dict[str, Dim] = {}
    for key, value in dims.items():
        if key not in known:
            raise ld.fail(
                table,
                key,
                "not an option of the baseline or the recipe; tunable keys: "
                f"{_listed(sorted(known)) or 'none'}",
            )
        dim = _dim(ld, table, key, value, known[key])
        values = dim.choices if dim.choices is not None else (dim.low, dim.high)
        for v in values:  # each end of the range (each choice) must be a valid config
            trial = copy.deepcopy(config)
            set_dotted(trial, key, v)
            check(table, trial)
        out[key] = dim
    return out


def _dims_of(raw: Mapping[str, Any], known: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> its dimension table; a nested table that is not a dimension is a level of
    dotted keys (``[tuning.space.optimizer] lr = {...}``)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = prefix + key
        nested = isinstance(value, Mapping) and value and not set(value) & set(_DIM_KEYS)
        if nested and name not in known:
            out.update(_dims_of(value, known, f"{name}."))
        else:
            out[name] = value
    return out


def parse_tuning(
    ld: _Loader,
    raw: Any,
    arm_tables: Mapping[str, Any],
    arms: Mapping[str, Arm],
    baseline: dict[str, Any],
    defaults: Mapping[str, Any],
    check: Callable[[str, dict[str, Any]], None],
    metric_dir: str,
) -> TuningSpec | None:
    """``[tuning]`` (``raw``, None when absent) and the arms' own spaces (``arm_tables``:
    arm -> its ``tuning`` table). ``defaults``: the recipe's options and their defaults."""
    if raw is None:
        if arm_tables:
            name = next(iter(arm_tables))
            raise ld.fail(
                f"arms.{name}.tuning", None, "an arm's tuning space needs a [tuning] table"
            )
        return None
    tun: _Tuning = ld.model(_Tuning, "tuning", raw)
    flat_base = flatten(baseline)
    known = {**defaults, **flat_base}
    if not tun.space:
        raise ld.fail("tuning.space", None, "missing: name at least one key to tune, e.g. "
                      "lr = { low = 1e-4, high = 1.0, log = true }")  # fmt: skip
    space = _space(ld, "tuning.space", tun.space, known, check, baseline)
    arm_spaces: dict[str, dict[str, Dim]] = {}
    for name, table in arm_tables.items():
        where = f"arms.{name}.tuning"
        if name not in arms or arms[name].kind != "arm":
            raise ld.fail(where, None, "only declared arms ([arms.NAME]) have their own space")
        if not isinstance(table, Mapping) or set(table) != {"space"}:
            raise ld.fail(where, None, "holds one table, [arms.NAME.tuning.space]; the budget "
                          "and sampler are the same for every arm ([tuning])")  # fmt: skip
        own_known = {**known, **flatten(arms[name].components)}
        own = _space(ld, f"{where}.space", table["space"], own_known, check, arms[name].config)
        for key in own:
            if key in space:
                raise ld.fail(f"{where}.space", key, "is already in [tuning.space]: every arm "
                              "is tuned over it")  # fmt: skip
        arm_spaces[name] = own
    direction = metric_direction(tun.objective, "max" if metric_dir == "max" else "min")
    return TuningSpec(
        budget=tun.budget,
        sampler=tun.sampler,
        objective=tun.objective,
        direction=direction,
        seeds=tun.seeds,
        root_seed=tun.root_seed,
        space=space,
        arm_spaces=arm_spaces,
    )
