"""Loading a spec: :func:`load_spec` reads a file and :func:`parse_spec` validates its text
into a :class:`~fairtrial.spec.Spec`, table by table, then the task (built, so its checksum
is known) and its metric, the recipe (imported, its config options known) or the command,
the baseline and every arm's config, the leave-one-out ablations, the seeds and trial count,
and the command's placeholders. The first mistake found is raised as one
:class:`~fairtrial.errors.SpecError`; nothing runs before the whole spec is valid.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fairtrial.errors import MissingDependency, TaskError
from fairtrial.recipes import BUILTIN_RECIPES, ConfigError, build_config, config_class_of
from fairtrial.record import DEFAULT_COST_MARGIN
from fairtrial.spec.design import _check_primary, _parse_design
from fairtrial.spec.errors import _clip, _line_of, _listed, _show, spec_error
from fairtrial.spec.limits import (
    _PLACEHOLDER,
    COMMAND_FIELDS,
    DEFAULT_MAX_SEEDS,
    MAX_ARMS,
    MAX_TRIALS,
    NAME_RULE,
    PILOT_SEEDS,
    SPEED_TIMING_REPEATS,
    valid_name,
)
from fairtrial.spec.model import Ablation, Arm, Hypothesis, Spec, flatten, set_dotted
from fairtrial.spec.reading import _check_document, _Loader, _parse_toml, read_spec_text
from fairtrial.spec.refs import (
    _RECIPE_VALID,
    _TASK_VALID,
    _function_problem,
    _ref_problem,
    _task_ref_problem,
)
from fairtrial.spec.tables import (
    _SECTIONS,
    _VALID,
    _Ablations,
    _Compute,
    _Experiment,
    _Hypothesis,
    _Slurm,
)
from fairtrial.spec.tasks import parse_tasks
from fairtrial.spec.tuning import parse_tuning
from fairtrial.tasks import METRICS, Task, get_task, import_object, metrics_for
from fairtrial.tasks.external import is_external


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    p = Path(path)
    return parse_spec(read_spec_text(p), path=p)


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
    if isinstance(raw["experiment"], Mapping) and "tasks" in raw["experiment"]:
        return parse_tasks(ld, raw, path, _parse_single)
    if "tasks" in raw:
        raise ld.fail("tasks", None, "per-task settings need [experiment] tasks = [...]")
    return _parse_single(ld, raw, path)


#: what an external task's metric may be called: a keyword argument of ctx.report_test
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _external_metric(ld: _Loader, exp: _Experiment) -> tuple[str, Literal["max", "min"]]:
    """An external task's metric and direction: both named by the spec, since the recipe
    computes the metric and fairtrial cannot know whether higher or lower is better."""
    for key, what, example in (
        ("metric", "the metric the recipe reports", '"accuracy"'),
        ("direction", "whether higher or lower is better", '"max" or "min"'),
    ):
        if getattr(exp, key) is None:
            raise ld.fail(
                "experiment",
                None,
                f"missing required key '{key}' for task = {_show(exp.task)}: the recipe "
                f"evaluates itself, so the spec names {what} (e.g. {key} = {example})",
            )
    metric = str(exp.metric)
    if not _METRIC_NAME.fullmatch(metric):
        raise ld.fail(
            "experiment",
            f"metric = {_show(metric)}",
            "an external task's metric is a name the recipe reports it under: a letter or '_' "
            "then letters, digits or '_' (at most 64), e.g. \"accuracy\"",
        )
    return metric, "min" if exp.direction == "min" else "max"


def _parse_single(ld: _Loader, raw: dict[str, Any], path: Path | None) -> Spec:
    """One task's spec, from its parsed TOML."""
    exp: _Experiment = ld.model(_Experiment, "experiment", raw["experiment"])
    hyp: _Hypothesis = ld.model(_Hypothesis, "hypothesis", raw.get("hypothesis", {}))
    abl: _Ablations = ld.model(_Ablations, "ablations", raw.get("ablations", {}))
    comp: _Compute = ld.model(_Compute, "compute", raw.get("compute", {}))
    slurm: _Slurm = ld.model(_Slurm, "slurm", raw.get("slurm", {}))
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
    except (TaskError, MissingDependency) as exc:  # MissingDependency: the task's extra
        raise ld.fail("experiment", "task", str(exc)) from None
    except (Exception, SystemExit) as exc:  # the user's task factory raised: a spec problem
        raise ld.fail("experiment", task_key, f"building the task raised {exc!r}") from None
    if is_external(exp.task):
        metric, direction = _external_metric(ld, exp)
    else:
        metric = exp.metric or task.metric
        if metric not in metrics_for(task.kind):
            raise ld.fail(
                "experiment",
                f"metric = {json.dumps(metric)}",
                f"not a metric of {task.kind} task '{task.name}'; "
                f"valid: {', '.join(metrics_for(task.kind))}",
            )
        direction = METRICS[metric].direction
        if exp.direction is not None:
            raise ld.fail(
                "experiment",
                f"direction = {json.dumps(exp.direction)}",
                f"only for task = \"external:NAME\": metric '{metric}' of task '{task.name}' "
                f"fixes it ({'higher' if direction == 'max' else 'lower'} is better); "
                "remove the key",
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
    # [arms.NAME.tuning.space]: an arm's own tuning dimensions, not a component
    arm_tuning = {n: v["tuning"] for n, v in arms_raw.items() if "tuning" in v}
    if (
        arm_tuning
        and "tuning" not in flat_base
        and not any(k.startswith("tuning.") for k in flat_base)
    ):
        arms_raw = {n: {k: x for k, x in v.items() if k != "tuning"} for n, v in arms_raw.items()}
    else:
        arm_tuning = {}
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

    design = _parse_design(ld, abl, arms, baseline, by_components, check_config)
    _check_primary(ld, exp, hyp)

    defaults: dict[str, Any] = {}
    if config_class is not None and dataclasses.is_dataclass(config_class):
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(config_class)
            if f.default is not dataclasses.MISSING
        }
    tuning = parse_tuning(
        ld, raw.get("tuning"), arm_tuning, arms, baseline, defaults, check_config,
        direction,
    )  # fmt: skip

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
    if tuning is not None and len(arms) * (most + tuning.budget * tuning.seeds) > MAX_TRIALS:
        per_arm = most + tuning.budget * tuning.seeds
        raise ld.fail(
            "tuning",
            f"budget = {tuning.budget}",
            f"{len(arms)} arms × ({tuning.budget} configurations × {tuning.seeds} seeds + "
            f"{most} seeds) = {len(arms) * per_arm} trials; an experiment runs at most "
            f"{MAX_TRIALS}",
        )

    # command placeholders
    if exp.command is not None:
        valid = set(COMMAND_FIELDS) | set(flat_base)
        for m in _PLACEHOLDER.finditer(exp.command.replace("{{", "").replace("}}", "")):
            own = m.group(1) in flat_base  # a config key of that name is the user's own
            if is_external(exp.task) and m.group(1) in ("data_dir", "predictions") and not own:
                raise ld.fail(
                    "experiment",
                    "command",
                    f"{{{m.group(1)}}}: task {_show(exp.task)} has no data folder and no "
                    "predictions file: the command loads its own data and prints its test "
                    'score as a JSON line {"test": {"' + metric + '": value}}',
                )
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
        direction=direction,
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
            DEFAULT_COST_MARGIN if hyp.cost_margin is None else float(hyp.cost_margin),
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
        timing_repeats=min(
            SPEED_TIMING_REPEATS
            if exp.timing_repeats is None and exp.primary != "metric"
            else exp.timing_repeats or 0,
            max(0, (PILOT_SEEDS if auto else int(exp.seeds or 0)) - 1),
        ),
        resources={k: float(v) for k, v in exp.resources.items()},
        slurm=slurm.model_dump(exclude_unset=True),
        deterministic=exp.deterministic,
        tuning=tuning,
        primary=exp.primary,
        design=design,
    )
