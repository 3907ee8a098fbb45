"""Run an experiment: plan its trials, skip what the ledger already has, run the rest.

Resuming is the normal case, not a special one: every run asks the ledger which trials are
done (finished, failed, diverged: failures are results) and runs the others. A trial left
``running`` by a run that was killed is re-run as its next attempt; the metrics of the killed
attempt stay in the ledger under their own attempt number and are never mixed with the new ones.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.markup import escape

from fairtrial import provenance
from fairtrial.backends.base import Backend, stop_on_signals
from fairtrial.ledger import Ledger, TrialRow
from fairtrial.ledger.lease import owner_id
from fairtrial.plan import (
    design_seed_warning,
    plan_seeds,
    plan_trials,
    seed_floor_warning,
    spec_code_snapshot,
)
from fairtrial.record import LOST
from fairtrial.rounds import RunSummary as RunSummary
from fairtrial.rounds import run_rows
from fairtrial.spec import PILOT_SEEDS, Spec

#: (retry_failed, console, show_progress, max_retries, keep_going)
_Opts = tuple[bool, Console, "bool | None", "int | None", bool]


@stop_on_signals()  # SIGTERM, SIGHUP: stop like Ctrl-C, recording what was running
def run_experiment(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    *,
    retry_failed: bool = False,
    console: Console | None = None,
    show_progress: bool | None = None,
    max_retries: int | None = None,
    keep_going: bool = False,
    also_untuned: bool = False,
) -> RunSummary:
    """Run every trial of ``spec`` that the ledger does not have yet; resumable at any point.

    Each trial is identified by what it runs (:func:`fairtrial.plan.trial_identity`): one
    whose identity already has a result in the ledger, from this experiment or another, is
    reused; an edit of the recipe's code gives new trials, and the experiment's verdict then
    uses only those (the old ones stay in the ledger).

    A trial whose process dies under it (status ``lost``: killed, crashed) runs again as its
    next attempt, up to ``max_retries`` times in this run (default: the spec's
    ``max_retries``), and is then recorded ``failed`` with the reason and the attempt count.
    A trial whose recipe raised is not retried: the same code would raise again. When the
    first trial of every arm fails with the same error the run stops there (``stopped`` says
    why) unless ``keep_going``.

    With ``seeds = "auto"`` the run has two stages: the pilot seeds, then as many seeds as the
    power analysis of the pilot asks for (:func:`fairtrial.plan.plan_seeds`), up to
    ``max_seeds``. The plan is a function of the pilot's results, so a resumed run makes the
    same plan.

    Ctrl-C, SIGTERM and SIGHUP (where their handlers are Python's defaults, in the main
    thread) stop the run: its workers are stopped, the trials they were running are stored
    ``interrupted`` (the next run resumes them), and the KeyboardInterrupt is raised again
    (for SIGTERM and SIGHUP, :class:`~fairtrial.backends.base.RunInterrupted`, whose
    ``signum`` says which).
    """
    console = console or Console(stderr=True)
    opts: _Opts = (retry_failed, console, show_progress, max_retries, keep_going)
    if spec.tasks:
        return _run_tasks(spec, ledger, backend, opts, also_untuned)
    if spec.tuning is not None:
        return _run_tuned(spec, ledger, backend, opts, also_untuned)
    return _run_compared(spec, ledger, backend, opts)


def _run_compared(spec: Spec, ledger: Ledger, backend: Backend, opts: _Opts) -> RunSummary:
    """The compared trials: every arm (at the configs ``spec`` holds) on every seed; then
    the baseline's repeated trials that measure the timing noise (``timing_repeats``)."""
    summary = _run_compared_trials(spec, ledger, backend, opts)
    if spec.timing_repeats and summary.stopped is None:
        seeds = ledger.experiment(spec.experiment_id).seeds
        summary.repeats = _repeats(replace(spec, seeds=seeds), ledger, backend, opts)
    return summary


def _repeats(spec: Spec, ledger: Ledger, backend: Backend, opts: _Opts) -> int:
    """Run the baseline's repeated trials (:func:`fairtrial.plan.repeat_trials`); how many
    ran now."""
    from fairtrial.ledger.stages import REPEAT
    from fairtrial.plan import repeat_trials

    retry_failed, console, show_progress, max_retries, keep_going = opts
    snapshot = spec_code_snapshot(spec)
    code_hash = provenance.code_hash(snapshot)
    plans = repeat_trials(spec, code_hash)
    if not plans:
        return 0
    eid = spec.experiment_id
    ledger.add_stage_trials(eid, REPEAT, plans)
    rows = {r.id: r for r, _ in ledger.stage_trials(eid, REPEAT)}
    planned = [rows[p.trial_id] for p in plans if p.trial_id in rows]
    summary = RunSummary(eid, total=len(planned), already_done=0)
    run_rows(spec, ledger, backend, snapshot, code_hash, planned, summary, console,
             (retry_failed, show_progress, max_retries, keep_going), stage=REPEAT)  # fmt: skip
    return summary.ran


def _run_compared_trials(spec: Spec, ledger: Ledger, backend: Backend, opts: _Opts) -> RunSummary:
    """Every arm (at the configs ``spec`` holds) on every seed."""
    console = opts[1]
    if not spec.auto_seeds and not spec.deterministic:
        warning = seed_floor_warning(spec.seeds, spec.arm_table(), spec.hypothesis.alpha)
        for line in (warning, design_seed_warning(spec)):
            if line:
                console.print(f"[bold yellow]warning[/]: {escape(line)}", highlight=False)
    if not spec.auto_seeds:
        summary = _run(spec, ledger, backend, *opts)
        _warn_unread_config(spec, ledger, console)
        return summary
    pilot = _run(replace(spec, seeds=PILOT_SEEDS), ledger, backend, *opts, pilot=True)
    if pilot.stopped:
        return pilot
    scores: dict[str, dict[int, float]] = {}
    for t in ledger.trials(spec.experiment_id):
        if t.status == "finished" and t.result is not None and t.seed < PILOT_SEEDS:
            scores.setdefault(t.arm, {})[t.seed] = float(t.result)
    assert spec.hypothesis.smallest_effect is not None and spec.max_seeds is not None
    seed_plan = plan_seeds(
        scores,
        spec.arm_table(),
        spec.direction,
        smallest_effect=spec.hypothesis.smallest_effect,
        alpha=spec.hypothesis.alpha,
        power=spec.hypothesis.power,
        max_seeds=spec.max_seeds,
    )
    n = seed_plan["seeds"]
    ledger.set_seeds(spec.experiment_id, n)
    console.print(
        f'seeds = "auto": the pilot\'s {PILOT_SEEDS} seeds ask for {seed_plan["needed"]} '
        f"({seed_plan['rule']})"
        + (f"; capped at max_seeds = {spec.max_seeds}" if seed_plan["capped"] else "")
        + f": running {n} seeds",
        highlight=False,
    )
    rest = _run(replace(spec, seeds=n), ledger, backend, *opts)
    rest.already_done -= pilot.ran
    for name in ("ran", "finished", "failed", "diverged", "interrupted", "retried", "seconds"):
        setattr(rest, name, getattr(rest, name) + getattr(pilot, name))
    rest.failures[:0] = pilot.failures
    rest.seed_plan = seed_plan
    _warn_unread_config(spec, ledger, console)
    return rest


def _run_tasks(
    spec: Spec, ledger: Ledger, backend: Backend, opts: _Opts, also_untuned: bool
) -> RunSummary:
    """An experiment over several tasks: each task's own experiment, one after another (the
    same seeds on every task); the summary adds them up."""
    console = opts[1]
    register(spec, ledger)
    total = RunSummary(spec.experiment_id, total=0, already_done=0)
    for child in spec.children:
        console.print(f"task {escape(child.task)}: experiment {child.name} ({child.experiment_id})",
                      highlight=False)  # fmt: skip
        if child.tuning is not None:
            one = _run_tuned(child, ledger, backend, opts, also_untuned)
        else:
            one = _run_compared(child, ledger, backend, opts)
        for name in ("total", "already_done", "ran", "finished", "failed", "diverged",
                     "interrupted", "retried", "seconds", "reused", "replaced", "elsewhere",
                     "superseded", "kept_failures"):  # fmt: skip
            setattr(total, name, getattr(total, name) + getattr(one, name))
        total.failures += one.failures
        total.elsewhere_owners += one.elsewhere_owners
        for status, n in one.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
        total.tuned.update({f"{child.task}: {a}": line for a, line in one.tuned.items()})
        if one.stopped:
            total.stopped = f"task {child.task}: {one.stopped}"
            break
    return total


def _run_tuned(
    spec: Spec, ledger: Ledger, backend: Backend, opts: _Opts, also_untuned: bool
) -> RunSummary:
    """``[tuning]``: tune every arm with the same budget, then run each arm's best
    configuration on the experiment's seeds (those are compared); beside them, the arms at
    their spec values when those trials exist or ``also_untuned`` asks for them."""
    from fairtrial.tuning.driver import describe_best, tune

    assert spec.tuning is not None
    retry_failed, console, show_progress, max_retries, keep_going = opts
    options = (retry_failed, show_progress, max_retries, keep_going)
    register(spec, ledger)
    tuning = spec.tuning
    console.print(
        f"tuning: {len(spec.arms)} arms × {tuning.budget} configurations × {tuning.seeds} "
        f"tuning seed(s), sampler {tuning.sampler}, chosen on {tuning.objective} (the test "
        "split is never scored while tuning)",
        highlight=False,
    )
    snapshot = spec_code_snapshot(spec)
    tuned = tune(spec, ledger, backend, console, options, snapshot)
    if tuned.stopped is not None or tuned.summary is None:
        summary = tuned.summary or RunSummary(spec.experiment_id, total=0, already_done=0)
        summary.stopped = tuned.stopped
        summary.tuning = tuned.summary
        return summary
    for arm, best in tuned.best.items():
        line = describe_best(arm, best, tuning.objective)
        console.print(f"tuned {escape(line)}", highlight=False)
    untuned = _untuned(spec, ledger, backend, console, options, also_untuned, snapshot)
    arms = {n: replace(a, config=tuned.configs[n]) for n, a in spec.arms.items()}
    evaluated = replace(spec, arms=arms)
    summary = _run_compared(evaluated, ledger, backend, opts)
    summary.tuning = tuned.summary
    summary.untuned = untuned
    summary.tuned = {a: describe_best(a, b, tuning.objective) for a, b in tuned.best.items()}
    return summary


def _untuned(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    console: Console,
    options: Any,
    run: bool,
    snapshot: dict[str, Any],
) -> RunSummary | None:
    """The arms at their spec values on the experiment's seeds: run when ``run``, else
    attached when every one of them already ran (by identity, in any experiment)."""
    from fairtrial.ledger.stages import UNTUNED

    code_hash = provenance.code_hash(snapshot)
    plans = plan_trials(spec, code_hash)
    eid = spec.experiment_id
    if not run:
        have = {t.id: t for t in ledger.trials_of_identity([p.trial_id for p in plans])}
        if not all(p.trial_id in have and have[p.trial_id].status == "finished" for p in plans):
            return None
    ledger.add_stage_trials(eid, UNTUNED, plans)
    summary = RunSummary(eid, total=len(plans), already_done=0)
    if run:
        rows = {r.id: r for r, _ in ledger.stage_trials(eid, UNTUNED)}
        planned = [rows[i] for i in dict.fromkeys(p.trial_id for p in plans)]
        run_rows(spec, ledger, backend, snapshot, code_hash, planned, summary, console, options,
                 stage=UNTUNED)  # fmt: skip
    return summary


def _warn_unread_config(spec: Spec, ledger: Ledger, console: Console) -> None:
    """One yellow line about config keys no trial read (they had no effect)."""
    from fairtrial.configreads import experiment_unread, unread_text

    found = experiment_unread(ledger, spec.experiment_id)
    if found is not None:
        text = unread_text(found, command=spec.command is not None)
        console.print(f"[yellow]warning: {escape(text)}[/]", highlight=False)


def _run(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    retry_failed: bool,
    console: Console,
    show_progress: bool | None,
    max_retries: int | None,
    keep_going: bool,
    pilot: bool = False,
) -> RunSummary:
    """One stage of a run: the experiment's trials for ``spec.seeds`` seeds (``pilot``: the
    first seeds of a ``seeds = "auto"`` plan, whose later seeds stay as they are)."""
    eid = spec.experiment_id
    register(spec, ledger)
    snapshot = spec_code_snapshot(spec)
    code_hash = provenance.code_hash(snapshot)
    before = {(r.arm, r.seed): r for r in ledger.trials(eid)}
    plans = plan_trials(spec, code_hash)
    ledger.add_trials(plans)
    if not pilot:
        # seeds an earlier plan had and this one has not (seeds = "auto" asks for fewer now)
        ledger.trim_slots(eid, spec.seeds)
    rows = {r.id: r for r in ledger.trials(eid)}
    replaced = [
        b for p in plans if (b := before.get((p.arm, p.seed))) is not None and b.id != p.trial_id
    ]
    if replaced:
        _say_replaced(console, spec, replaced, code_hash)
    planned = [rows[trial_id] for trial_id in dict.fromkeys(p.trial_id for p in plans)]
    summary = RunSummary(eid, total=len(plans), already_done=0, replaced=len(replaced))
    run_rows(spec, ledger, backend, snapshot, code_hash, planned, summary, console,
             (retry_failed, show_progress, max_retries, keep_going))  # fmt: skip
    me = owner_id()
    final = ledger.trials(eid)
    for r in final:
        summary.statuses[r.status] = summary.statuses.get(r.status, 0) + 1
    # trials still held by other runs now (some may have ended while this run went on)
    summary.elsewhere = sum(r.status == "running" and r.owner != me for r in final)
    if not retry_failed:
        summary.kept_failures = sum(rows[r.id].status in LOST for r in final if r.id in rows)
    return summary


def register(spec: Spec, ledger: Ledger) -> None:
    """Record the experiment (and its compute settings) in the ledger."""
    ledger.upsert_experiment(
        experiment_id=spec.experiment_id,
        name=spec.name,
        spec_hash=spec.spec_hash,
        spec=spec.normalized(),
        arms=spec.arm_table(),
        spec_path=str(spec.path.resolve()) if spec.path else None,
        task=spec.task,
        task_checksum=spec.task_checksum,
        metric=spec.metric,
        direction=spec.direction,
        seeds=spec.seeds,
        root_seed=spec.root_seed,
    )
    ledger.set_compute_settings(spec.experiment_id, dict(spec.compute))


def _say_replaced(console: Console, spec: Spec, replaced: list[TrialRow], code_hash: str) -> None:
    """Say why trials this experiment had are not in its verdict any more."""
    old_code = sorted({r.code_hash or "unrecorded" for r in replaced if r.code_hash != code_hash})
    old_data = sorted({r.task_checksum for r in replaced if r.task_checksum} - {spec.task_checksum})
    why = []
    if old_code:
        why.append(
            f"the recipe's code changed (code {', '.join(c[:12] for c in old_code)} then, "
            f"{code_hash[:12]} now)"
        )
    if old_data:
        why.append(
            f"task '{spec.task}' data changed (checksum {old_data[0][:12]} then, "
            f"{spec.task_checksum[:12]} now)"
        )
    console.print(
        f"[bold yellow]note[/]: {'; '.join(why) or 'what the trials run changed'} since this "
        f"experiment last ran: {len(replaced)} trials run again on it; the old ones stay in the "
        "ledger, out of this verdict",
        highlight=False,
        markup=True,
    )
