"""Many trials as one batched model, in this process (``--backend vectorized``).

The backend claims every pending trial, groups them by what can share one batched model
(:func:`plan`: the seeds of an arm, and the arms whose configs differ only in options the
recipe's batched form takes per member, such as the learning rate), whatever the order the
runner hands them over in, and hands each group (of at most ``group`` trials; default all)
to the recipe's batched form, ``train_vectorized(configs, ctxs)`` (declared with
:func:`fairtrial.recipes.vectorized`; the built-in torch recipes have one, trained by
:mod:`fairtrial.recipes._vmap`; found through :func:`fairtrial.execute.batched_form`).
Every trial still gets its own context, metrics, sealed test evaluation and outcome through
the sink, so the ledger reads exactly as after a run on the local backend.

A recipe without a batched form, a config the batched form refuses
(:class:`~fairtrial.recipes.NotVectorizable`), and a command recipe run their seeds one after
another here, with :func:`~fairtrial.execute.execute_trial`, and a one-line notice
says why. Seed ``i`` computes what it would alone on as many threads (the built-in forms: bit
for bit on one thread); runs on different thread counts, on any backend, may differ in the last
bits (a kernel split over threads adds in another order).

Time: the seeds of a group share the process, so each trial is charged an equal share of the
group's wall time and phase times. Trials run in this process: there is no crash isolation
(use ``local`` for recipes that may crash the interpreter) and no per-trial time limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fairtrial.backends.base import Backend, Sink, TrialClock, TrialJob, TrialOutcome, interrupted
from fairtrial.backends.local import available_cores
from fairtrial.context import TrialContext
from fairtrial.errors import TrialDiverged
from fairtrial.execute import (
    NotVectorizable,
    batch_options,
    batched_form,
    execute_trial,
    set_threads,
    task_changed,
    task_of,
    trial_context,
)
from fairtrial.meter import Meter, metering_enabled
from fairtrial.meter.trial import FLOPS_METHOD


class SeedContext(TrialContext):
    """A trial context in a group: ``error`` holds what ended this seed early, if anything;
    ``batched_flops`` the FLOPs the batched model charged it (``{key: [per_run, runs]}``)."""

    error: BaseException | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batched_flops: dict[str, list[int]] = {}


def _canonical(items: dict[str, Any]) -> str:
    return json.dumps(items, sort_keys=True, default=repr)


def batch_key(job: TrialJob) -> tuple[Any, ...]:
    """Trials with the same key can be members of one batched model.

    They run the same recipe on the same task in the same experiment, with configs equal in
    every option but those the recipe's batched form takes per member (its ``varies``), the
    defaults of a config dataclass filled in (an option set to its default equals one left
    out). A trial whose recipe has no batched form keys by its whole config: those run one
    after another, an arm at a time.
    """
    where = (job.experiment_id, job.recipe, job.command, job.base_dir, job.task)
    varies, config = batch_options(job)
    if not varies:
        return (*where, job.arm, _canonical(config))
    return (*where, _canonical({k: v for k, v in config.items() if k not in varies}))


def plan(jobs: Sequence[TrialJob], size: int | None = None) -> list[list[TrialJob]]:
    """The batched models that ``jobs`` make, whatever the order they were handed over in.

    Trials with one :func:`batch_key` form one group (split into groups of at most ``size``);
    within a group the trials of one arm are next to each other, in the order the arms came
    in, each arm's in seed order, so that an arm is one run of equal configs.
    """
    by_key: dict[tuple[Any, ...], list[TrialJob]] = {}
    for job in jobs:
        by_key.setdefault(batch_key(job), []).append(job)
    groups: list[list[TrialJob]] = []
    for members in by_key.values():
        arms = {arm: i for i, arm in enumerate(dict.fromkeys(j.arm for j in members))}
        members.sort(key=lambda j: (arms[j.arm], j.seed))
        step = size or len(members)
        groups.extend(members[i : i + step] for i in range(0, len(members), step))
    return groups


def _emitter(sink: Sink, job: TrialJob) -> Callable[[str, Any], None]:
    def emit(kind: str, payload: Any) -> None:
        sink.event(job, kind, payload)

    return emit


def _outcome_of(ctx: SeedContext, wall: float) -> TrialOutcome:
    """What :func:`execute_trial` would have reported for this seed."""
    phases = dict(ctx.phases)
    exc = ctx.error
    if exc is None:
        try:
            ctx.flush()
        except Exception as flush_exc:
            exc = flush_exc
    if isinstance(exc, TrialDiverged):
        return TrialOutcome("diverged", error=f"diverged: {exc}", wall_time=wall, phases=phases)
    if exc is not None:
        with contextlib.suppress(Exception):
            ctx.flush()
        detail = "".join(traceback.format_exception(exc))[-20000:]
        return TrialOutcome(
            "failed",
            error=f"{type(exc).__name__}: {exc}",
            error_detail=detail,
            wall_time=wall,
            phases=phases,
        )
    result, error = ctx.final()
    if error is not None:
        return TrialOutcome("failed", error=error, wall_time=wall, phases=phases)
    return TrialOutcome("finished", result=result, wall_time=wall, phases=phases)


#: figures of a batched group that add up over its seeds: each seed is charged its share
_SHARED = ("cpu_time", "energy_cpu", "energy_gpu")


def _group_record(meter: Meter | None, n: int) -> dict[str, Any]:
    """The compute record of a batched group, as each of its ``n`` seeds' share.

    Time, CPU time and energy are split equally; memory is the group's (all seeds together,
    labelled so); FLOPs are each member's own (:func:`_member_flops`).
    """
    if meter is None:
        return {"version": 1, "partial": "metering was off"}
    rec = meter.record(status="finished", phases={})
    # the members of a batched model share its time: no member's own time was measured
    rec["batched"] = n
    for key in _SHARED:
        if rec.get(key) is not None:
            rec[key] = rec[key] / n
    share = f" (the batched group's total / {n} seeds)"
    for key in ("cpu_time_method", "energy_cpu_method", "energy_gpu_method"):
        if rec.get(key) and not str(rec[key]).startswith("not measured"):
            rec[key] = f"{rec[key]}{share}"
    if rec.get("peak_rss_method"):
        rec["peak_rss_method"] = f"{rec['peak_rss_method']}; all {n} seeds of the batched group"
    rec["flops"] = None
    rec["flops_method"] = "not counted: the recipe's batched form did not count them"
    rec.pop("flops_detail", None)
    return rec


def _member_flops(ctx: SeedContext) -> dict[str, Any]:
    """The FLOPs the batched model charged ``ctx``: a lone run's count, block by block."""
    if not ctx.batched_flops:
        return {}
    detail = {k: {"per_run": per, "runs": runs} for k, (per, runs) in ctx.batched_flops.items()}
    return {
        "flops": float(sum(per * runs for per, runs in ctx.batched_flops.values())),
        "flops_method": f"{FLOPS_METHOD}; on the batched model, each member's share",
        "flops_detail": detail,
    }


class VectorizedBackend(Backend):
    """Seeds of one arm trained together as one batched model, in this process."""

    name = "vectorized"

    def __init__(self, group: int | None = None, threads: int | None = None) -> None:
        if group is not None and group < 1:
            raise ValueError(f"group must be at least 1, got {group}")
        #: at most this many seeds per batched model (None: every pending seed of an arm)
        self.group = group
        self.workers = 1
        self.threads = threads or available_cores()
        self._said: set[str] = set()
        #: the sizes of the groups of the last run, in the order they ran
        self.sizes: list[int] = []

    def notice(self, message: str) -> None:
        """Say something once per run (on stderr, above the progress bar)."""
        if message not in self._said:
            self._said.add(message)
            print(f"vectorized: {message}", file=sys.stderr, flush=True)

    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        # Every pending trial is claimed before the first group starts (the run's heartbeat
        # keeps their leases), so that grouping never depends on the hand-over order.
        pending = list(jobs)
        groups = plan(pending, self.group)
        self.sizes = [len(g) for g in groups]
        if groups:
            sizes = ", ".join(str(n) for n in self.sizes)
            self.notice(f"{len(pending)} trials as {len(groups)} group(s) of {sizes}")
        if any(job.target is not None for job in pending):
            self.notice(
                "time to target is not measured for trials trained as one batched model "
                "(their time is shared); run with --backend local to measure it"
            )
        for k, group in enumerate(groups):
            try:
                self._run_group(group, sink)
            except BaseException:
                # the trials of the groups not yet started were claimed: free them
                for rest in groups[k + 1 :]:
                    for job in rest:
                        sink.finished(job, interrupted())
                raise

    def _sequential(self, jobs: Sequence[TrialJob], sink: Sink) -> None:
        for i, job in enumerate(jobs):
            try:
                sink.finished(job, execute_trial(job, _emitter(sink, job)))
            except BaseException:
                for rest in jobs[i:]:
                    sink.finished(rest, interrupted())
                raise

    def _run_group(self, group: list[TrialJob], sink: Sink) -> None:
        for job in group:
            sink.started(job)
        first = group[0]
        set_threads(self.threads)
        # a recipe that cannot be imported has none: execute_trial reports why, per trial
        batched = batched_form(first)
        if batched is None:
            what = f"recipe '{first.recipe}'" if first.recipe else "a command recipe"
            self.notice(
                f"{what} has no batched form (train_vectorized): its seeds run one after another"
            )
            self._sequential(group, sink)
            return
        form = batched[0]
        forms = [batched] + [batched_form(job) for job in group[1:]]
        configs = [
            f[1] if f is not None else job.config for f, job in zip(forms, group, strict=True)
        ]
        reads = [f[2] if f is not None else None for f in forms]

        clock = TrialClock()
        ctxs: list[SeedContext] = []
        meter = Meter() if first.meter and metering_enabled() else None
        if meter is not None:
            meter.start()
        try:
            task = task_of(first)
            if task_changed(first, task):
                # execute_trial says so per trial, with the checksums
                self._sequential(group, sink)
                return
            for job, config in zip(group, configs, strict=True):
                ctxs.append(trial_context(job, task, config, _emitter(sink, job), cls=SeedContext))
            setup = clock.wall() / len(group)
            for ctx in ctxs:
                ctx.phases["setup"] = setup
            try:
                form(configs, ctxs)
            except NotVectorizable as exc:
                if any(c.n_points or c.test_score is not None for c in ctxs):
                    raise RuntimeError(
                        f"train_vectorized raised NotVectorizable ({exc}) after it had logged: "
                        "raise it before training starts"
                    ) from exc
                arms = "', '".join(dict.fromkeys(job.arm for job in group))
                self.notice(f"arm(s) '{arms}' run their trials one after another: {exc}")
                self._sequential(group, sink)
                return
            except Exception as exc:
                # the batched form itself failed: every seed still running fails with it
                for ctx in ctxs:
                    if ctx.error is None and ctx.test_score is None:
                        ctx.error = exc
        except Exception as exc:
            if not ctxs:  # the task could not be loaded: say so per trial, as everywhere
                self._sequential(group, sink)
                return
            for ctx in ctxs:
                if ctx.error is None:
                    ctx.error = exc
        except BaseException:
            wall = clock.wall() / len(group)
            for job in group:
                sink.finished(job, interrupted(wall))
            raise
        finally:
            if meter is not None:
                meter.close()
        wall = clock.wall() / len(group)
        shared = _group_record(meter, len(group))
        for job, ctx, seen in zip(group, ctxs, reads, strict=True):
            read = tuple(sorted(seen)) if seen is not None else None
            outcome = _outcome_of(ctx, wall)
            compute = {
                **shared,
                **(_member_flops(ctx) if meter is not None else {}),
                "status": outcome.status,
                "wall_time": wall,
                "phases": dict(outcome.phases),
                "train_time": outcome.phases.get("train"),
            }
            sink.finished(job, dataclasses.replace(outcome, compute=compute, config_read=read))
