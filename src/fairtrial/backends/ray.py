"""Trials as Ray tasks, on this machine or on a cluster (``--backend ray [--address ADDR]``).

Ray (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI Applications", OSDI)
is imported here only, when this backend is used; ``pip install 'fairtrial[ray]'``.

* Each trial is one Ray task that runs :func:`~fairtrial.execute.execute_trial`, the
  same code as every backend, so results equal the local backend's for the same seeds. The
  task asks for the spec's ``[experiment] resources`` (``cpus``, fractional ``gpus``,
  ``mem`` in GB);
  default one CPU.
* Metrics reach the driver while the trial runs: the task's ``emit`` hands each flushed
  batch to a small actor and waits for it to be taken, and the driver drains the actor
  and writes the ledger; it is the only writer. Points flushed before a worker dies are
  therefore kept.
* Ray's own task retries are off (``max_retries=0``): a task whose worker died (killed,
  out of memory, node lost) comes back ``lost``, and fairtrial's runner retries it as the
  trial's next attempt, whose metrics stay apart from the lost attempt's.
* ``time_limit``: the task is cancelled (force) that long after it began.

Where it runs: ``address`` (``ray://HOST:10001`` for Ray Client, ``HOST:6379`` or
``"auto"`` from a cluster node), else the ``RAY_ADDRESS`` environment variable, else a Ray
instance started for this run with ``workers`` CPUs (default: all cores) and shut down after.
Cluster nodes need the same Python environment (fairtrial, torch, ...) and the spec's folder
at the same path (a shared file system), since recipes are imported from it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fairtrial.backends.base import (
    STOP_SIGNALS,
    Backend,
    Sink,
    TrialClock,
    TrialJob,
    TrialOutcome,
)
from fairtrial.backends.local import available_cores
from fairtrial.errors import FairtrialError, MissingDependency
from fairtrial.execute import execute_trial

#: seconds between two drains of the event actor while trials run
_POLL = 0.1


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray", "ray", "the Ray backend") from None
    return ray


class _EventBox:
    """Holds events from trial tasks until the driver takes them (a Ray actor)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str, Any]] = []

    def put(self, trial_id: str, attempt: int, kind: str, payload: Any) -> None:
        self.events.append((trial_id, attempt, kind, payload))

    def take(self) -> list[tuple[str, int, str, Any]]:
        out, self.events = self.events, []
        return out


def _run_trial(job: TrialJob, box: Any) -> TrialOutcome:
    """The body of a trial's Ray task."""
    import ray

    def emit(kind: str, payload: Any) -> None:
        # wait for the actor to hold it: points flushed before a crash must not be in flight
        ray.get(box.put.remote(job.trial_id, job.attempt, kind, payload))

    emit("begin", os.getpid())
    return execute_trial(job, emit)


@dataclass
class _Running:
    job: TrialJob
    ref: Any
    #: from the submission; restarted when the task begins (it may wait in Ray's queue first)
    clock: TrialClock


class RayBackend(Backend):
    """Trials as Ray tasks with per-trial resources; the driver alone writes the ledger."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        time_limit: float | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _ray()  # a missing extra is said before any trial is claimed
        self.address = address
        #: trials in flight at once (default: what the cluster's CPUs hold)
        self.workers = workers or 0
        self._workers_given = workers is not None
        self.threads = threads
        self.time_limit = time_limit
        self.init_kwargs = dict(init_kwargs or {})
        self._per = 1.0  # CPUs the last submitted trial asked for

    # -- connecting ---------------------------------------------------------------------------
    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this backend started it (and must shut it down)."""
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        kwargs.update(self.init_kwargs)
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                cpus = self.workers if self._workers_given else available_cores()
                ray.init(num_cpus=cpus, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local Ray instance"
            raise FairtrialError(f"--backend ray: cannot connect to {where}: {exc}") from None
        return True

    # -- running ------------------------------------------------------------------------------
    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        ray = _ray()
        main = threading.current_thread() is threading.main_thread()
        before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if main else {}
        started = self._connect(ray)
        # ray.init makes SIGTERM exit the driver at once; the run's own handler stops it as
        # Ctrl-C does (cancelling the tasks, recording them interrupted)
        for sig, handler in before.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        try:
            self._run(ray, jobs, sink, total)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        box = ray.remote(num_cpus=0)(_EventBox).remote()
        task = ray.remote(_run_trial)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        running: dict[tuple[str, int], _Running] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < self._capacity(cpus):
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    res = job.resources
                    options: dict[str, Any] = {
                        "num_cpus": res.get("cpus", 1.0),
                        "max_retries": 0,  # fairtrial retries lost trials as new attempts
                    }
                    if res.get("gpus"):
                        options["num_gpus"] = res["gpus"]
                    if res.get("mem"):  # GB in the spec, bytes for Ray
                        options["memory"] = int(res["mem"] * 2**30)
                    self._per = max(float(options["num_cpus"]), 1e-3)
                    sink.started(job)
                    ref = task.options(**options).remote(job, box)
                    clock = TrialClock.of(job, self.time_limit)
                    running[job.trial_id, job.attempt] = _Running(job, ref, clock)
                if not running:
                    break
                ready, _ = ray.wait([r.ref for r in running.values()], num_returns=1, timeout=_POLL)
                self._drain(ray, box, running, sink)
                done = {id(ref) for ref in ready}
                for key, r in list(running.items()):
                    if id(r.ref) in done:
                        del running[key]
                        sink.finished(r.job, self._outcome(ray, r))
                    elif r.clock.expired():
                        ray.cancel(r.ref, force=True)
                        del running[key]
                        sink.finished(r.job, r.clock.exceeded())
        except BaseException:
            for r in running.values():
                ray.cancel(r.ref, force=True)
            try:
                self._drain(ray, box, running, sink)
            finally:
                for r in running.values():
                    sink.finished(r.job, r.clock.interrupted())
            raise
        finally:
            ray.kill(box)

    def _capacity(self, cpus: float) -> int:
        if self._workers_given:
            return self.workers
        # as many in flight as the cluster's CPUs hold; claiming more would only hold them
        # "running" in the ledger while they wait in Ray's queue
        self.workers = max(1, int(cpus / self._per))
        return self.workers

    def _drain(self, ray: Any, box: Any, running: dict[Any, _Running], sink: Sink) -> None:
        for trial_id, attempt, kind, payload in ray.get(box.take.remote()):
            r = running.get((trial_id, attempt))
            if r is None:
                continue
            if kind == "begin":
                r.clock.start()
            elif kind == "setup":  # the trial's setup is over: its time limit counts now
                r.clock.setup_done()
            else:
                sink.event(r.job, kind, payload)

    def _outcome(self, ray: Any, r: _Running) -> TrialOutcome:
        wall = r.clock.wall()
        try:
            outcome: TrialOutcome = ray.get(r.ref)
            return outcome
        except ray.exceptions.RayTaskError as exc:
            # raised by the task outside the trial (execute_trial itself never raises)
            return TrialOutcome("failed", error=f"ray task failed: {exc}", wall_time=wall)
        except ray.exceptions.RayError as exc:
            # the worker process (or its node) died under the trial: lost, retried
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return TrialOutcome("lost", error=f"ray worker lost: {reason}", wall_time=wall)
