"""Load and validate an experiment spec (TOML) into plain, frozen data.

Every mistake becomes one :class:`~fairtrial.errors.SpecError` whose message names the file,
the line where it can be found, the table and key, and what would be valid::

    exp.toml:7: [experiment] seeds = 1: must be a whole number >= 2

Validation is complete before any trial runs: the task is built (its checksum known), the
recipe imported and the config of every arm checked against the recipe's declared options.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import sys
from collections.abc import Mapping
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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
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
        if not _NAME.match(v):
            raise ValueError("must be letters, digits, '_', '-' or '.', starting with a letter")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str):
            if v != "auto":
                raise ValueError('must be a whole number >= 2, or "auto"')
            return v
        if v is not None and v < 1:
            raise ValueError("must be at least 2 (one seed cannot tell a gain from luck)")
        return v

    @field_validator("max_seeds")
    @classmethod
    def _max_seeds(cls, v: int | None) -> int | None:
        if v is not None and v < PILOT_SEEDS:
            raise ValueError(f"must be at least the {PILOT_SEEDS} seeds of the pilot")
        return v

    @field_validator("time_limit")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be a number of seconds > 0")
        return v

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be a whole number >= 0 (0 = never retry a lost trial)")
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float | int]) -> dict[str, float | int]:
        for key, amount in v.items():
            if key not in RESOURCE_KEYS:
                raise ValueError(f"unknown resource '{key}'; valid: {', '.join(RESOURCE_KEYS)}")
            if isinstance(amount, bool) or amount < 0 or (key == "cpus" and amount == 0):
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
        if v is not None and v <= 0:
            raise ValueError("must be > 0 (in the metric's units)")
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
        if v is not None and not v >= 0:
            raise ValueError("must be a number >= 0")
        return v

    @field_validator("pue")
    @classmethod
    def _pue(cls, v: float | None) -> float | None:
        if v is not None and not v >= 1:
            raise ValueError("must be a number >= 1 (1 = no facility overhead)")
        return v

    @field_validator("cpu_watts", "gpu_watts")
    @classmethod
    def _watts(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
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
    "command": "a command line string",
    "seeds": 'a whole number >= 2, or "auto"',
    "deterministic": "true (the recipe has no randomness: one run per arm) or false",
    "max_seeds": f'a whole number >= {PILOT_SEEDS} (with seeds = "auto")',
    "root_seed": "a whole number",
    "metric": "a metric name",
    "target": "a number",
    "time_limit": "a number of seconds > 0",
    "description": "a string",
    "max_retries": "a whole number >= 0",
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


class _Loader:
    def __init__(self, text: str, path: Path | None) -> None:
        self.text = text
        self.path = path
        self.label = str(path) if path is not None else "<spec>"

    def fail(self, table: str | None, key: str | None, message: str) -> SpecError:
        line = _line_of(self.text, table, key.split(" ")[0] if key else None) if table else None
        where = f"{self.label}:{line}" if line else self.label
        what = f"[{table}]" if table else ""
        if key:
            what = f"{what} {key}" if what else key
        return SpecError(f"{where}: {what}: {message}" if what else f"{where}: {message}")

    def unknown(self, table: str | None, key: str, valid: list[str]) -> SpecError:
        hint = difflib.get_close_matches(key, valid, n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        return self.fail(
            table, key, f"unknown key{did}; valid: {', '.join(valid) if valid else 'none'}"
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
            if err["type"] == "extra_forbidden" and key:
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
            shown = f" = {json.dumps(got)}" if key and key in raw else ""
            raise self.fail(table, f"{key}{shown}" if key else None, msg) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: cannot read spec file ({exc})") from None
    return parse_spec(text, path=p)


def parse_spec(text: str, path: Path | None = None) -> Spec:
    """Validate spec text; ``path`` names it in errors and anchors relative imports."""
    ld = _Loader(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        where = f"{ld.label}:{m.group(1)}" if m else ld.label
        raise SpecError(f"{where}: invalid TOML: {exc}") from None

    for key in raw:
        if key not in _SECTIONS:
            hint = difflib.get_close_matches(key, _SECTIONS, n=1)
            did = f" (did you mean [{hint[0]}]?)" if hint else ""
            line = _line_of(text, key)
            where = f"{ld.label}:{line}" if line else ld.label
            raise SpecError(f"{where}: unknown table [{key}]{did}; valid: {', '.join(_SECTIONS)}")
    if "experiment" not in raw:
        raise SpecError(f"{ld.label}: missing table [experiment] (name, task, recipe, seeds)")
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
    try:
        task: Task = get_task(exp.task, base_dir)
    except TaskError as exc:
        raise ld.fail("experiment", "task", str(exc)) from None
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
        if ":" not in recipe_ref:
            raise ld.fail(
                "experiment",
                f"recipe = {json.dumps(exp.recipe)}",
                f"unknown recipe; valid: {', '.join(sorted(BUILTIN_RECIPES))}, "
                "or 'module:function' for your own",
            )
        try:
            fn = import_object(recipe_ref, base_dir, "recipe")
        except ValueError as exc:
            raise ld.fail("experiment", "recipe", str(exc)) from None
        except Exception as exc:  # the user's module raised on import: still a spec problem
            raise ld.fail(
                "experiment", "recipe", f"importing '{recipe_ref}' raised {exc!r}"
            ) from None
        if not callable(fn):
            raise ld.fail("experiment", "recipe", f"'{recipe_ref}' is not a function")
        config_class = config_class_of(fn)

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
        if not _NAME.match(name):
            raise ld.fail(table, None, "arm names are letters, digits, '_', '-' or '.'")
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
                    f"baseline keys: {', '.join(flat_base) or 'none'}",
                )
            if flat_base[key] == value:
                raise ld.fail(table, key, f"equals the baseline's value {json.dumps(value)}")
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
    for target in loo:
        if target not in arms or target == "baseline":
            raise ld.fail(
                "ablations",
                f"leave_one_out = {json.dumps(target)}",
                f"no such arm; valid: {', '.join(a for a in arms if a != 'baseline') or 'none'}",
            )
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
