"""Load and validate an experiment spec (TOML) into plain, frozen data.

Every mistake becomes one :class:`~fairtrial.errors.SpecError` whose message names the file,
the line where it can be found, the table and key, and what would be valid::

    exp.toml:7: [experiment] seeds = 1: must be a whole number >= 2

Validation is complete before any trial runs: the task is built (its checksum known), the
recipe imported and the config of every arm checked against the recipe's declared options.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import hashlib
import inspect
import json
import math
import os
import re
import shlex
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from fairtrial.errors import SpecError, TaskError
from fairtrial.recipes import BUILTIN_RECIPES, ConfigError, build_config, config_class_of
from fairtrial.tasks import METRICS, Task, get_task, import_object, metrics_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ArmKind = Literal["baseline", "arm", "ablation"]
#: seeds = "auto": the pilot's seeds, and the default cap on the seeds the plan may ask for
PILOT_SEEDS = 5
DEFAULT_MAX_SEEDS = 50
#: Limits of a spec (each error that enforces one names it).
MAX_SPEC_BYTES = 1024 * 1024
MAX_SEEDS = 1000
#: arms, ablations included; with MAX_CONFIG_VALUES, bounds the work of checking a spec
MAX_ARMS = 200
#: values in [baseline] (each item of a list counts)
MAX_CONFIG_VALUES = 1000
#: arms × seeds (× max_seeds with seeds = "auto"): what `plan` lists and a run records
MAX_TRIALS = 20_000
MAX_RETRIES = 100
#: 0 <= root_seed < 2^31: the experiments table's Integer column on SQLite and PostgreSQL
ROOT_SEED_END = 2**31
#: a worker's deadline is waited on in milliseconds, which must fit a C int (about 24 days)
MAX_TIME_LIMIT = 1_000_000
#: experiment and arm names; a dotted config key; a task or recipe reference. An ablation's
#: name (ARM-no-KEY) then fits the stores' 200-character arm column and a file name.
MAX_NAME = 100
MAX_KEY = 80
MAX_REF = 200
#: tables and lists inside one another
MAX_DEPTH = 32
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
#: What experiment and arm names may be; they become folder names, so nothing else is allowed.
NAME_RULE = f"up to {MAX_NAME} letters, digits, '_', '-' or '.', starting with a letter or digit"
#: one part of a config key: what a command placeholder and a keyword argument can name
_KEY_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_INT64 = (-(2**63), 2**63 - 1)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: Placeholders a command may use besides the (dotted) config keys.
COMMAND_FIELDS = (
    "seed",
    "seed_init",
    "seed_data",
    "seed_augment",
    "seed_dropout",
    "data_dir",
    "predictions",
    "workdir",
    "arm",
    "trial_id",
    "task",
    "python",
)


def valid_name(text: object) -> bool:
    """Whether ``text`` is a valid experiment or arm name (:data:`NAME_RULE`): the one check
    of names, for spec files and for the names a bundle brings."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


#: What a trial may ask of a cluster (``[experiment] resources``): CPUs and (fractional) GPUs.
RESOURCE_KEYS = ("cpus", "gpus")


class _Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    task: str
    recipe: str | None = None
    command: str | None = None
    seeds: int | str | None = None
    max_seeds: int | None = None
    deterministic: bool = False
    root_seed: int = 0
    metric: str | None = None
    target: float | int | None = None
    time_limit: float | int | None = None
    description: str = ""
    max_retries: int = 2
    resources: dict[str, float | int] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not valid_name(v):
            raise ValueError(f"must be {NAME_RULE}")
        return v

    @field_validator("task", "recipe")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_REF:
            raise ValueError(f"is {len(v)} characters long; at most {MAX_REF}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str):
            if v != "auto":
                raise ValueError(f"must be {_VALID['seeds']}")
            return v
        if v is not None and v < 1:
            raise ValueError("must be at least 2 (one seed cannot tell a gain from luck)")
        if v is not None and v > MAX_SEEDS:
            raise ValueError(f"must be at most {MAX_SEEDS} seeds per arm")
        return v

    @field_validator("max_seeds")
    @classmethod
    def _max_seeds(cls, v: int | None) -> int | None:
        if v is not None and v < PILOT_SEEDS:
            raise ValueError(f"must be at least the {PILOT_SEEDS} seeds of the pilot")
        if v is not None and v > MAX_SEEDS:
            raise ValueError(f"must be at most {MAX_SEEDS} seeds per arm")
        return v

    @field_validator("root_seed")
    @classmethod
    def _root_seed(cls, v: int) -> int:
        if not 0 <= v < ROOT_SEED_END:
            raise ValueError(f"must be {_VALID['root_seed']}")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be {_VALID['target']}")
        return v

    @field_validator("time_limit")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= MAX_TIME_LIMIT:
            raise ValueError(f"must be {_VALID['time_limit']}")
        return v

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if not 0 <= v <= MAX_RETRIES:
            raise ValueError(
                f"must be a whole number from 0 to {MAX_RETRIES} (0 = never retry a lost trial)"
            )
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float | int]) -> dict[str, float | int]:
        for key, amount in v.items():
            if key not in RESOURCE_KEYS:
                raise ValueError(f"unknown resource '{key}'; valid: {', '.join(RESOURCE_KEYS)}")
            if (
                isinstance(amount, bool)
                or not math.isfinite(amount)
                or amount < 0
                or (key == "cpus" and amount == 0)
            ):
                raise ValueError(f"'{key}' must be a number {'> 0' if key == 'cpus' else '>= 0'}")
        return v


class _Hypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    claim: str = ""
    smallest_effect: float | int | None = None
    alpha: float = 0.05
    power: float = 0.8

    @field_validator("smallest_effect")
    @classmethod
    def _effect(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("must be a number > 0 (in the metric's units)")
        return v

    @field_validator("alpha", "power")
    @classmethod
    def _prob(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must be between 0 and 1")
        return v


class _Compute(BaseModel):
    """``[compute]``: how the meter's figures become time-to-target, CO2e and money.

    Not part of the spec hash: changing the grid intensity or a price re-labels the same
    trials, it does not make a new experiment.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    target_metric: str | None = None
    grid_intensity: float | int | None = None
    grid_intensity_source: str | None = None
    pue: float | int | None = None
    price_per_hour: float | int | None = None
    currency: str | None = None
    estimate_energy: bool = False
    cpu_watts: float | int | None = None
    gpu_watts: float | int | None = None

    @field_validator("grid_intensity", "price_per_hour")
    @classmethod
    def _non_negative(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError("must be a number >= 0")
        return v

    @field_validator("pue")
    @classmethod
    def _pue(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v >= 1):
            raise ValueError("must be a number >= 1 (1 = no facility overhead)")
        return v

    @field_validator("cpu_watts", "gpu_watts")
    @classmethod
    def _watts(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("must be a number of watts > 0")
        return v


class _Ablations(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    leave_one_out: str | list[str] = []


#: What each field accepts, for the messages (pydantic's own words name Python types).
_VALID: dict[str, str] = {
    "name": "a string",
    "task": "a task name or 'module:function'",
    "recipe": "a built-in recipe name or 'module:function'",
    "command": 'a command line, e.g. "python3 train.py --lr {lr} --seed {seed}"',
    "seeds": f'a whole number >= 2 and <= {MAX_SEEDS}, or "auto"',
    "deterministic": "true (the recipe has no randomness: one run per arm) or false",
    "max_seeds": f'a whole number from {PILOT_SEEDS} to {MAX_SEEDS} (with seeds = "auto")',
    "root_seed": f"a whole number from 0 to {ROOT_SEED_END - 1}",
    "metric": "a metric name",
    "target": "a finite number",
    "time_limit": f"a number of seconds > 0 and at most {MAX_TIME_LIMIT}",
    "description": "a string",
    "max_retries": f"a whole number from 0 to {MAX_RETRIES}",
    "resources": "a table like {cpus = 1, gpus = 0.5}",
    "claim": "a string",
    "smallest_effect": "a number > 0",
    "alpha": "a number in (0, 1)",
    "power": "a number in (0, 1)",
    "leave_one_out": "an arm name or a list of arm names",
    "target_metric": 'the name of a logged metric, e.g. "val_accuracy"',
    "grid_intensity": "a number of gCO2e per kWh >= 0",
    "grid_intensity_source": "a string naming where the intensity comes from",
    "pue": "a number >= 1",
    "price_per_hour": "a number >= 0",
    "currency": 'a string, e.g. "USD"',
    "estimate_energy": "true or false",
    "cpu_watts": "a number of watts > 0",
    "gpu_watts": "a number of watts > 0",
}
_SECTIONS = ("experiment", "hypothesis", "baseline", "arms", "ablations", "compute")


@dataclass(frozen=True)
class Hypothesis:
    claim: str = ""
    smallest_effect: float | None = None
    alpha: float = 0.05
    power: float = 0.8


@dataclass(frozen=True)
class Arm:
    """One configuration: the baseline plus named components (dotted keys -> values)."""

    name: str
    kind: ArmKind
    config: dict[str, Any]
    components: dict[str, Any]
    parent: str | None = None  # ablations: the arm a component was removed from
    removed: str | None = None  # ablations: the component removed


@dataclass(frozen=True)
class Ablation:
    """``arm`` without ``removed``, run as arm ``as_arm`` (generated, or an arm declared alike)."""

    arm: str
    removed: str
    as_arm: str


@dataclass(frozen=True)
class Spec:
    """A validated experiment spec."""

    name: str
    task: str
    seeds: int
    root_seed: int
    metric: str
    direction: Literal["max", "min"]
    baseline: dict[str, Any]
    arms: dict[str, Arm]
    recipe: str | None = None
    command: str | None = None
    target: float | None = None
    time_limit: float | None = None
    description: str = ""
    hypothesis: Hypothesis = field(default_factory=Hypothesis)
    ablations: tuple[Ablation, ...] = ()
    path: Path | None = None
    task_checksum: str = ""
    #: seeds = "auto": ``seeds`` starts at the pilot and grows to what the power analysis asks
    auto_seeds: bool = False
    max_seeds: int | None = None
    #: the ``[compute]`` keys that were set (fairtrial.meter.ComputeSettings.from_table reads it)
    compute: dict[str, Any] = field(default_factory=dict)
    #: the recipe has no randomness: each arm is one run (seeds past 0 only check that)
    deterministic: bool = False

    def target_metric(self) -> tuple[str, Literal["max", "min"]]:
        """The logged metric time-to-target watches, and whether higher or lower is better.

        ``[compute] target_metric`` or ``val_<metric>``; the direction is that of the metric
        named after its ``val_``/``train_`` prefix (``val_mse``: min), "min" for a name ending
        in ``loss`` or ``error``, else the experiment metric's.
        """
        name = self.compute.get("target_metric") or f"val_{self.metric}"
        bare = re.sub(r"^(val|train|valid|validation)_", "", name)
        if bare in METRICS:
            return name, METRICS[bare].direction
        if bare.endswith(("loss", "error")):
            return name, "min"
        return name, self.direction

    #: how a trial runs, not what it computes: neither is part of the experiment's identity
    max_retries: int = 2
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    def normalized(self) -> dict[str, Any]:
        """The spec as canonical data: what identifies the experiment (its hash covers this)."""
        return {
            "experiment": {
                "name": self.name,
                "task": self.task,
                "recipe": self.recipe,
                "command": self.command,
                "seeds": "auto" if self.auto_seeds else self.seeds,
                **({"max_seeds": self.max_seeds} if self.auto_seeds else {}),
                # only when set: experiments from before the key keep their ids
                **({"deterministic": True} if self.deterministic else {}),
                "root_seed": self.root_seed,
                "metric": self.metric,
                "target": self.target,
                "time_limit": self.time_limit,
            },
            "hypothesis": {
                "claim": self.hypothesis.claim,
                "smallest_effect": self.hypothesis.smallest_effect,
                "alpha": self.hypothesis.alpha,
                "power": self.hypothesis.power,
            },
            "baseline": self.baseline,
            "arms": {a.name: a.components for a in self.arms.values() if a.kind == "arm"},
            "ablations": sorted({a.arm for a in self.ablations}),
        }

    def arm_table(self) -> dict[str, list[dict[str, Any]]]:
        """Arms in order (baseline, declared arms, ablations) and the ablation map."""
        return {
            "arms": [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "components": a.components,
                    "parent": a.parent,
                    "removed": a.removed,
                }
                for a in self.arms.values()
            ],
            "ablations": [
                {"arm": ab.arm, "removed": ab.removed, "as": ab.as_arm} for ab in self.ablations
            ],
        }

    @property
    def spec_hash(self) -> str:
        return hash_normalized(self.normalized())

    @property
    def experiment_id(self) -> str:
        return self.spec_hash[:12]


# -- helpers ---------------------------------------------------------------------------------


def hash_normalized(normalized: Mapping[str, Any]) -> str:
    """The spec hash of a normalised spec (:meth:`Spec.normalized`): an experiment's identity;
    its first 12 hex digits are the experiment id."""
    blob = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


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
    parts = dotted.split(".")
    for p in parts[:-1]:
        mapping = mapping.setdefault(p, {})
    mapping[parts[-1]] = value


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


class _Loader:
    def __init__(self, text: str, path: Path | None) -> None:
        self.text = text
        self.path = path
        self.label = str(path) if path is not None else "<spec>"

    def fail(self, table: str | None, key: str | None, message: str) -> SpecError:
        line = _line_of(self.text, table, key.split(" ")[0] if key else None) if table else None
        where = f"{self.label}:{line}" if line else self.label
        what = f"[{_clip(table)}]" if table else ""
        if key:
            what = f"{what} {_clip(key, 120)}" if what else _clip(key, 120)
        return spec_error(f"{where}: {what}: {message}" if what else f"{where}: {message}")

    def unknown(self, table: str | None, key: str, valid: list[str]) -> SpecError:
        hint = difflib.get_close_matches(key, valid, n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        return self.fail(
            table,
            _clip(key) or '""',
            f"unknown key{did}; valid: {', '.join(valid) if valid else 'none'}",
        )

    def model(self, cls: type[BaseModel], table: str, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise self.fail(None, None, f"'{table}' must be a table ([{table}])")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            errors = exc.errors()
            # a misspelt key also shows up as a missing one: name the misspelling first
            err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
            key = str(err["loc"][0]) if err["loc"] else None
            if err["type"] == "extra_forbidden" and key is not None:
                raise self.unknown(table, key, list(cls.model_fields)) from None
            if err["type"] == "missing" and key:
                raise self.fail(
                    table, None, f"missing required key '{key}' ({_VALID[key]})"
                ) from None
            got = raw.get(key) if key else None
            if err["type"] == "value_error":
                msg = str(err["msg"]).removeprefix("Value error, ")
            else:
                msg = f"must be {_VALID.get(key or '', 'valid')}"
            shown = f" = {_show(got)}" if key and key in raw else ""
            raise self.fail(table, f"{key}{shown}" if key else None, msg) from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_SIZE_RULE = f"a spec is a regular file of at most {MAX_SPEC_BYTES // 1024 // 1024} MiB"


def _not_regular(p: Path, mode: int) -> SpecError | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return spec_error(f"{p}: is {kind}, not a spec file; {_SIZE_RULE}")


def _too_big(p: Path, size: int | None) -> SpecError:
    """``size``: from stat; None: the file grew past the limit while it was read."""
    what = f"{size} bytes" if size is not None else f"more than {MAX_SPEC_BYTES} bytes"
    return spec_error(f"{p}: is {what}; {_SIZE_RULE} ({MAX_SPEC_BYTES} bytes)")


def read_spec_text(path: str | Path) -> str:
    """The text of spec file ``path``: a regular file of at most :data:`MAX_SPEC_BYTES`, UTF-8.

    A pipe or a device would block or never end: the file is checked before it is opened,
    opened without blocking and checked again (it may have been swapped), and read no further
    than one byte past the limit (it may be growing).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise spec_error(f"{p}: no such spec file") from None
    except (OSError, ValueError) as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc})") from None
    if (problem := _not_regular(p, st.st_mode)) is not None:
        raise problem
    if st.st_size > MAX_SPEC_BYTES:
        raise _too_big(p, st.st_size)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise spec_error(f"{p}: no such spec file") from None
    except OSError as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc})") from None
    try:
        if (problem := _not_regular(p, os.fstat(fd).st_mode)) is not None:
            raise problem
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SPEC_BYTES and (chunk := os.read(fd, MAX_SPEC_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc})") from None
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        raise _too_big(p, None)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc}); a spec is UTF-8 text") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    p = Path(path)
    return parse_spec(read_spec_text(p), path=p)


def _parse_toml(text: str, ld: _Loader) -> dict[str, Any]:
    # characters take one to four bytes: more characters than the limit is too big already
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise spec_error(f"{ld.label}: is more than {MAX_SPEC_BYTES} bytes; {_SIZE_RULE}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        where = f"{ld.label}:{m.group(1)}" if m else ld.label
        raise spec_error(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:  # the parser recurses once per nested table or list
        raise spec_error(
            f"{ld.label}: invalid TOML: tables or lists nested too deeply; "
            f"a spec nests at most {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:  # Python reads no integer of more than 4300 digits
        why = (
            "a number too long to read; TOML integers are 64-bit (from -2^63 to 2^63-1)"
            if "digits" in str(exc)
            else str(exc)
        )
        raise spec_error(f"{ld.label}: invalid TOML: {why}") from None


def _walk(
    value: Any, path: tuple[str, ...] = (), in_list: bool = False, depth: int = 0
) -> Iterator[tuple[tuple[str, ...], Any, bool, int]]:
    """(keys, value, inside a list, depth) of ``value`` and of everything inside it; nothing
    below :data:`MAX_DEPTH` (the caller refuses what is that deep)."""
    yield path, value, in_list, depth
    if depth > MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, (*path, str(k)), in_list, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, path, True, depth + 1)


def _check_document(ld: _Loader, raw: Mapping[str, Any]) -> None:
    """What no value anywhere may be: nested too deep, a date, a 65-bit integer, a NUL; and in
    [baseline] and [arms.*], keys a recipe and a command can use and numbers that are finite."""
    for path, value, in_list, depth in _walk(raw):
        if not path:
            continue
        if path[0] == "arms" and len(path) > 1:
            table, keys = f"arms.{path[1]}", path[2:]
        else:
            table, keys = path[0], path[1:]
        key = ".".join(keys)
        config = path[0] in ("baseline", "arms") and bool(keys)
        if depth > MAX_DEPTH:
            raise ld.fail(table, _clip(key) or None, f"nested more than {MAX_DEPTH} levels deep")
        if any("\x00" in k for k in path):
            raise ld.fail(table, _clip(key) or None, "a key contains a NUL character (\\x00)")
        if isinstance(value, (datetime.date, datetime.time)):
            valid = _VALID.get(
                keys[-1] if keys else "", "a string, a number, true or false, a list or a table"
            )
            raise ld.fail(
                table,
                f"{_clip(key)} = {_show(value)}",
                f"a TOML date or time is not a valid value; valid: {valid} "
                '(to pass a date as text, quote it: "1979-05-27")',
            )
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise ld.fail(
                table,
                f"{_clip(key)} = {_show(value)}",
                "is outside the 64-bit integers TOML allows (from -2^63 to 2^63-1)",
            )
        if isinstance(value, str) and "\x00" in value:
            raise ld.fail(table, _clip(key) or None, "contains a NUL character (\\x00)")
        if not config:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ld.fail(
                table,
                f"{_clip(key)} = {value}",
                "must be a finite number: nan and inf equal no value, so arms holding them "
                "cannot be compared, and no report or bundle can store them",
            )
        if not in_list and (len(key) > MAX_KEY or not all(_KEY_PART.match(k) for k in keys)):
            raise ld.fail(
                table,
                _clip(key),
                "a config key is letters, digits, '_' and '-', starting with a letter or '_' "
                f"(nested keys joined by '.'), at most {MAX_KEY} characters in all",
            )
    baseline = raw.get("baseline")
    if isinstance(baseline, Mapping):
        count = sum(1 for _, v, _, _ in _walk(baseline) if not isinstance(v, (Mapping, list)))
        if count > MAX_CONFIG_VALUES:
            raise ld.fail(
                "baseline",
                None,
                f"holds {count} values; a config holds at most {MAX_CONFIG_VALUES}",
            )


_RECIPE_VALID = (
    f"a built-in recipe ({', '.join(sorted(BUILTIN_RECIPES))}) or 'module:function' naming "
    "a function train(config, ctx) in a module beside the spec or in an installed package"
)
_TASK_VALID = (
    "a built-in task (fairtrial tasks), NAME@DRAW for a fresh draw of one, or "
    "'module:function' naming a function that returns a fairtrial.Task"
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


def parse_spec(text: str, path: Path | None = None) -> Spec:
    """Validate spec text; ``path`` names it in errors and anchors relative imports."""
    ld = _Loader(text, path)
    raw = _parse_toml(text, ld)

    for key in raw:
        if key not in _SECTIONS:
            hint = difflib.get_close_matches(key, _SECTIONS, n=1)
            did = f" (did you mean [{hint[0]}]?)" if hint else ""
            line = _line_of(text, key)
            where = f"{ld.label}:{line}" if line else ld.label
            raise spec_error(
                f"{where}: unknown table [{_clip(key)}]{did}; valid: {', '.join(_SECTIONS)}"
            )
    if "experiment" not in raw:
        raise spec_error(f"{ld.label}: missing table [experiment] (name, task, recipe, seeds)")
    _check_document(ld, raw)
    exp: _Experiment = ld.model(_Experiment, "experiment", raw["experiment"])
    hyp: _Hypothesis = ld.model(_Hypothesis, "hypothesis", raw.get("hypothesis", {}))
    abl: _Ablations = ld.model(_Ablations, "ablations", raw.get("ablations", {}))
    comp: _Compute = ld.model(_Compute, "compute", raw.get("compute", {}))
    # deterministic = true: one run per arm decides; a second seed (the default) checks that
    # the recipe really gives the same result on every seed
    if exp.deterministic:
        if exp.seeds == "auto":
            raise ld.fail(
                "experiment",
                'seeds = "auto"',
                "deterministic = true runs one seed per arm (plus checks): set seeds = 2",
            )
        if exp.seeds is None:
            exp.seeds = 2
    elif exp.seeds is None:
        raise ld.fail("experiment", None, f"missing required key 'seeds' ({_VALID['seeds']})")
    elif isinstance(exp.seeds, int) and exp.seeds < 2:
        raise ld.fail(
            "experiment",
            f"seeds = {exp.seeds}",
            "must be at least 2 (one seed cannot tell a gain from luck); a recipe without "
            "randomness says deterministic = true",
        )
    if comp.estimate_energy and comp.cpu_watts is None and comp.gpu_watts is None:
        raise ld.fail(
            "compute",
            "estimate_energy = true",
            "needs the watts to assume: set cpu_watts and/or gpu_watts",
        )
    if (comp.cpu_watts is not None or comp.gpu_watts is not None) and not comp.estimate_energy:
        key = "cpu_watts" if comp.cpu_watts is not None else "gpu_watts"
        raise ld.fail(
            "compute", key, "is only used by estimate_energy = true (energy is measured otherwise)"
        )

    # task and metric
    base_dir = path.parent if path is not None else None
    task_key = f"task = {_show(exp.task)}"
    if (problem := _task_ref_problem(exp.task, base_dir)) is not None:
        raise ld.fail("experiment", task_key, f"{problem}; valid: {_TASK_VALID}")
    try:
        task: Task = get_task(exp.task, base_dir)
    except TaskError as exc:
        raise ld.fail("experiment", "task", str(exc)) from None
    except (Exception, SystemExit) as exc:  # the user's task factory raised: a spec problem
        raise ld.fail("experiment", task_key, f"building the task raised {exc!r}") from None
    metric = exp.metric or task.metric
    if metric not in metrics_for(task.kind):
        raise ld.fail(
            "experiment",
            f"metric = {json.dumps(metric)}",
            f"not a metric of {task.kind} task '{task.name}'; "
            f"valid: {', '.join(metrics_for(task.kind))}",
        )

    # recipe or command
    if (exp.recipe is None) == (exp.command is None):
        raise ld.fail(
            "experiment", None, "set exactly one of 'recipe' (Python) or 'command' (any language)"
        )
    recipe_ref = BUILTIN_RECIPES.get(exp.recipe, exp.recipe) if exp.recipe else None
    config_class = None
    if recipe_ref is not None:
        recipe_key = f"recipe = {_show(exp.recipe)}"
        if ":" not in recipe_ref:
            raise ld.fail(
                "experiment",
                recipe_key,
                f"unknown recipe; valid: {', '.join(sorted(BUILTIN_RECIPES))}, "
                "or 'module:function' for your own",
            )
        if (problem := _ref_problem(recipe_ref, "recipe", "fairtrial.recipes")) is not None:
            raise ld.fail("experiment", recipe_key, f"{problem}; valid: {_RECIPE_VALID}")
        try:
            fn = import_object(recipe_ref, base_dir, "recipe")
        except ValueError as exc:
            raise ld.fail("experiment", "recipe", str(exc)) from None
        except (Exception, SystemExit) as exc:  # the user's module raised on import
            raise ld.fail(
                "experiment", "recipe", f"importing '{recipe_ref}' raised {exc!r}"
            ) from None
        if (problem := _function_problem(fn, "recipe", ("config", "ctx"))) is not None:
            raise ld.fail("experiment", recipe_key, f"{problem}; valid: {_RECIPE_VALID}")
        config_class = config_class_of(fn)
    else:
        command = exp.command or ""
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise ld.fail(
                "experiment",
                f"command = {_show(command)}",
                f"cannot be split into words as a shell would ({exc}); "
                "close every quote, or escape a lone one with a backslash",
            ) from None
        if not words:
            raise ld.fail(
                "experiment",
                f"command = {_show(command)}",
                f"is empty; valid: {_VALID['command']}",
            )

    # baseline and arms
    baseline = raw.get("baseline", {})
    if not isinstance(baseline, Mapping):
        raise ld.fail(None, None, "'baseline' must be a table ([baseline])")
    baseline = copy.deepcopy(dict(baseline))
    flat_base = flatten(baseline)
    arms_raw = raw.get("arms", {})
    if not isinstance(arms_raw, Mapping) or not all(
        isinstance(v, Mapping) for v in arms_raw.values()
    ):
        raise ld.fail(None, None, "arms are tables: [arms.NAME] with the keys they change")
    if len(arms_raw) + 1 > MAX_ARMS:
        raise ld.fail(
            None, None, f"{len(arms_raw) + 1} arms with the baseline; a spec has at most {MAX_ARMS}"
        )

    def check_config(table: str, config: dict[str, Any]) -> None:
        if config_class is None:
            return
        try:
            build_config(config_class, config)
        except ConfigError as exc:
            key = re.search(r"'([^']+)'", str(exc))
            raise ld.fail(table, key.group(1) if key else None, str(exc)) from None

    check_config("baseline", baseline)
    arms: dict[str, Arm] = {"baseline": Arm("baseline", "baseline", baseline, {})}
    by_components: dict[str, str] = {}
    for name, overrides in arms_raw.items():
        table = f"arms.{name}"
        if not valid_name(name):
            raise ld.fail(table, None, f"arm names are {NAME_RULE}")
        if name == "baseline":
            raise ld.fail(table, None, "duplicate arm: 'baseline' is the [baseline] table")
        components = flatten(overrides)
        if not components:
            raise ld.fail(table, None, "an arm must change at least one key of [baseline]")
        for key, value in components.items():
            if key not in flat_base:
                raise ld.fail(
                    table,
                    key,
                    "the baseline has no such key (an arm may only change keys of [baseline]); "
                    f"baseline keys: {_listed(flat_base) or 'none'}",
                )
            if flat_base[key] == value:
                raise ld.fail(table, key, f"equals the baseline's value {_show(value)}")
        sig = json.dumps(components, sort_keys=True)
        if sig in by_components:
            raise ld.fail(
                table, None, f"duplicate arm: same changes as [arms.{by_components[sig]}]"
            )
        by_components[sig] = name
        config = copy.deepcopy(baseline)
        for key, value in components.items():
            set_dotted(config, key, value)
        check_config(table, config)
        arms[name] = Arm(name, "arm", config, components)

    # leave-one-out ablations
    loo = [abl.leave_one_out] if isinstance(abl.leave_one_out, str) else list(abl.leave_one_out)
    ablations: list[Ablation] = []
    for i, target in enumerate(loo):
        if target not in arms or target == "baseline":
            raise ld.fail(
                "ablations",
                f"leave_one_out = {_show(target)}",
                f"no such arm; valid: {_listed(a for a in arms if a != 'baseline') or 'none'}",
            )
        if target in loo[:i]:
            raise ld.fail("ablations", f"leave_one_out = {_show(target)}", "names the arm twice")
        parent = arms[target]
        if len(parent.components) < 2:
            raise ld.fail(
                "ablations",
                "leave_one_out",
                f"arm '{target}' has one component; removing it gives the baseline",
            )
        for removed in parent.components:
            kept = {k: v for k, v in parent.components.items() if k != removed}
            sig = json.dumps(kept, sort_keys=True)
            if sig in by_components:
                ablations.append(Ablation(target, removed, by_components[sig]))
                continue
            name = f"{target}-no-{removed}"
            if name in arms:
                raise ld.fail(
                    f"arms.{name}",
                    None,
                    f"the ablation of [arms.{target}] without '{removed}' is named '{name}': "
                    "rename this arm",
                )
            if len(arms) >= MAX_ARMS:
                raise ld.fail(
                    "ablations",
                    "leave_one_out",
                    f"the ablations make more than {MAX_ARMS} arms; a spec has at most {MAX_ARMS}",
                )
            config = copy.deepcopy(baseline)
            for key, value in kept.items():
                set_dotted(config, key, value)
            arms[name] = Arm(name, "ablation", config, kept, parent=target, removed=removed)
            by_components[sig] = name
            ablations.append(Ablation(target, removed, name))

    # seeds = "auto": a pilot, then as many seeds as the power analysis asks, up to max_seeds
    auto = exp.seeds == "auto"
    if auto:
        if hyp.smallest_effect is None:
            raise ld.fail(
                "hypothesis",
                "smallest_effect",
                'seeds = "auto" plans the seeds to detect smallest_effect: set it',
            )
        if not any(a.kind == "arm" for a in arms.values()):
            raise ld.fail("experiment", 'seeds = "auto"', "needs an arm to compare: [arms.NAME]")
    elif exp.max_seeds is not None:
        raise ld.fail("experiment", "max_seeds", 'only applies with seeds = "auto"')
    most = (exp.max_seeds or DEFAULT_MAX_SEEDS) if auto else int(exp.seeds or 0)
    if len(arms) * most > MAX_TRIALS:
        key = "max_seeds" if auto else "seeds"
        raise ld.fail(
            "experiment",
            f"{key} = {most}",
            f"{len(arms)} arms × {most} seeds = {len(arms) * most} trials; "
            f"an experiment runs at most {MAX_TRIALS}",
        )

    # command placeholders
    if exp.command is not None:
        valid = set(COMMAND_FIELDS) | set(flat_base)
        for m in _PLACEHOLDER.finditer(exp.command.replace("{{", "").replace("}}", "")):
            if m.group(1) not in valid:
                raise ld.fail(
                    "experiment",
                    "command",
                    f"unknown placeholder {{{m.group(1)}}}; valid: {', '.join(sorted(valid))}",
                )

    return Spec(
        name=exp.name,
        task=exp.task,
        seeds=PILOT_SEEDS if auto else int(exp.seeds),
        root_seed=exp.root_seed,
        metric=metric,
        direction=METRICS[metric].direction,
        baseline=baseline,
        arms=arms,
        recipe=recipe_ref,
        command=exp.command,
        target=float(exp.target) if exp.target is not None else None,
        time_limit=float(exp.time_limit) if exp.time_limit is not None else None,
        description=exp.description,
        hypothesis=Hypothesis(
            hyp.claim,
            float(hyp.smallest_effect) if hyp.smallest_effect is not None else None,
            hyp.alpha,
            hyp.power,
        ),
        ablations=tuple(ablations),
        path=path,
        task_checksum=task.checksum,
        auto_seeds=auto,
        max_seeds=(exp.max_seeds or DEFAULT_MAX_SEEDS) if auto else None,
        compute={
            k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in comp.model_dump(exclude_unset=True).items()
        },
        max_retries=exp.max_retries,
        resources={k: float(v) for k, v in exp.resources.items()},
        deterministic=exp.deterministic,
    )
