"""``fairtrial plan``: a dry run of a spec, with its time estimate and power."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from fairtrial.cli._common import open_ledger, out, store_option
from fairtrial.estimate import PlanEstimate, PowerRow, TimeEstimate


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@store_option
def plan(spec_path: Path, store: str | None) -> None:
    """Dry run: validate SPEC and show its arms, trials and derived seeds."""
    from fairtrial.spec import load_spec

    spec = load_spec(spec_path)
    if spec.tasks:
        out.print(
            f"[bold]{escape(spec.name)}[/] ({spec.experiment_id}) over {len(spec.tasks)} tasks"
            + (f" (suite {spec.suite})" if spec.suite else "")
            + ": each task is an experiment of its own, run one after another on the same "
            "seeds; the claims are then judged across the tasks (the task set is fixed by "
            "this spec)"
        )
        for child in spec.children:
            out.print(f"\n[bold]task {escape(child.task)}[/]: experiment {escape(child.name)}")
            _plan_one(child, store)
        return
    _plan_one(spec, store)


def _plan_one(spec: Any, store: str | None) -> None:
    """The plan of one task's experiment."""
    from fairtrial.estimate import plan_estimate
    from fairtrial.plan import design_seed_warning, plan_trials, seed_floor_warning
    from fairtrial.tasks import get_task

    task = get_task(spec.task, spec.base_dir)
    trials = plan_trials(spec)
    sizes = (
        "data the recipe loads, evaluated by the recipe, not sealed"
        if task.kind == "external"
        else f"train/val/test {task.sizes['train']}/{task.sizes['val']}/{task.sizes['test']}"
    )
    out.print(
        f"[bold]{escape(spec.name)}[/] ({spec.experiment_id}) · task {spec.task} "
        f"({sizes}, checksum {task.checksum[:12]}) · metric {spec.metric} ({spec.direction})"
    )
    out.print(f"recipe: {spec.recipe or 'command: ' + str(spec.command)}")
    t = Table(title=f"{len(spec.arms)} arms × {spec.seeds} seeds = {len(trials)} trials")
    for col in ("arm", "kind", "components (changes from baseline)"):
        t.add_column(col)
    for a in spec.arms.values():
        comps = ", ".join(f"{k}={json.dumps(v)}" for k, v in a.components.items()) or "—"
        kind = a.kind + (f" of {a.parent} without {a.removed}" if a.kind == "ablation" else "")
        kind += f" (combination of {a.parent}'s components)" if a.kind == "design" else ""
        t.add_row(escape(a.name), escape(kind), escape(comps))
    out.print(t)
    if spec.design is not None:
        d = spec.design
        built = d.build()
        legend = ", ".join(f"{f} = {c}" for f, c in zip(built.factors, d.factors, strict=True))
        out.print(
            f"design: {built.name} over arm {d.arm}'s components ({legend}); each combination "
            "another arm already has runs as that arm; main effects and interactions up to "
            f"order {d.interactions} are estimated from the same seeds",
            highlight=False,
        )
    if spec.timing_repeats:
        out.print(
            f"timing: the baseline's seeds 1..{spec.timing_repeats} run a second time, after "
            "the compared trials, to measure the timing noise between identical trials",
            highlight=False,
        )
    if spec.primary != "metric":
        out.print(
            f"speed trial: the verdict is about {spec.primary.replace('_', ' ')}; the metric "
            f"is a guard (at most {spec.hypothesis.smallest_effect:g} worse). Arms run "
            "interleaved seed by seed, so the machine's drift falls on every arm alike",
            highlight=False,
        )
    warning = None
    if not spec.auto_seeds and not spec.deterministic:
        warning = seed_floor_warning(spec.seeds, spec.arm_table(), spec.hypothesis.alpha)
    for line in (warning, design_seed_warning(spec)):
        if line:
            out.print(f"[bold yellow]warning[/]: {escape(line)}")
    out.print(
        f"seeds: root {spec.root_seed}; seed 0 streams "
        + ", ".join(f"{k}={v}" for k, v in trials[0].seeds.items())
        + " (identical for every arm)"
    )
    tuning_trials = 0
    if spec.tuning is not None:
        tun = spec.tuning
        tuning_trials = len(spec.arms) * tun.budget * tun.seeds
        dims = "; ".join(f"{k}: {d.describe()}" for k, d in sorted(tun.space.items()))
        own = "".join(
            f"; {arm} also tunes "
            + ", ".join(f"{k}: {d.describe()}" for k, d in sorted(space.items()))
            for arm, space in sorted(tun.arm_spaces.items())
        )
        out.print(
            f"tuning: {len(spec.arms)} arms × {tun.budget} configurations × {tun.seeds} tuning "
            f"seed(s) = {tuning_trials} tuning trials first (sampler {tun.sampler}, seed "
            f"{tun.root_seed}, chosen on {tun.objective}; the test split is never scored "
            f"while tuning) over {dims}{own}; then each arm's best configuration runs on the "
            f"seeds above",
            highlight=False,
        )
        for a in spec.arms.values():
            start = {k: v for k, v in a.components.items() if k in tun.space_of(a)}
            if start:
                shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in start.items())
                out.print(
                    f"note: {escape(a.name)}: {escape(shown)} is tuned too: the spec value "
                    "is only a starting point",
                    highlight=False,
                )
    est = plan_estimate(open_ledger(store), spec, len(trials) + tuning_trials)
    out.print(time_line(est.time))
    if spec.auto_seeds:
        out.print(
            f'seeds = "auto": a pilot of {spec.seeds} seeds, then as many as detecting '
            f"smallest_effect = {spec.hypothesis.smallest_effect:g} with power "
            f"{spec.hypothesis.power} needs, at most {spec.max_seeds}"
        )
    for line in progress_lines(est):
        out.print(line, highlight=False)


def time_line(est: TimeEstimate) -> str:
    """``estimated time: ...`` for a time estimate."""
    if est.seconds is None:
        return "estimated time: unknown (no earlier trials on this task in this store)"
    return (
        f"estimated time: ~{est.seconds:.0f} s on {est.workers} workers "
        f"(mean of {est.earlier} earlier trials on '{est.task}' in this store)"
    )


def power_line(row: PowerRow) -> str:
    """The minimum detectable effect of one arm at the planned seeds."""
    line = (
        f"power: {row.arm} vs baseline: sd of paired differences {row.sd_diff:.4g} "
        f"({row.n_pairs} seeds so far); {row.seeds} seeds detect an effect of {row.mde:.4g} "
        f"with power {row.power} at alpha {row.alpha}"
    )
    if row.seeds_needed is not None:
        line += f"; smallest_effect {row.smallest_effect:g} needs {row.seeds_needed} seeds"
    return line


def progress_lines(est: PlanEstimate) -> list[str]:
    """The trials done in the store and the power seen so far (or when it will be known)."""
    if est.done is None:
        return ["power: known once trials have run (the sd of the paired differences)"]
    return [
        f"in the store: {est.done}/{est.time.trials} trials done; `fairtrial run` resumes",
        *(power_line(row) for row in est.power),
    ]
