"""``fairtrial run --mirror mlflow``: each trial's MLflow run made and filled while it runs.

:class:`MlflowMirror` is an observer of the run (:mod:`fairtrial.observe`): the driver tells
it that a trial started, sent points, ended. It only queues them, so neither a trial's
``ctx.log`` (which runs in the worker, and is not touched at all) nor the driver's ledger
writes ever wait on MLflow; a thread of its own makes the runs (as ``fairtrial export --to
mlflow`` names them: the same experiment, parents, params and tags) and sends the queued
points with ``log_batch`` every :data:`FLUSH_SECONDS` or :data:`FLUSH_POINTS` points,
whichever comes first, and a trial's last points before its result and status.

A mirror never fails the run and never costs the ledger anything: when MLflow cannot be
reached, refuses a call, or falls behind, it says so in one warning line and stops; the
ledger has everything, and ``fairtrial export --to mlflow`` later sends what is missing (it
replaces the runs the mirror left unfinished). At the run's end the mirror sends what is
queued, waiting at most :data:`CLOSE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from fairtrial.errors import FairtrialError, require
from fairtrial.exports import mlflowkit as kit
from fairtrial.exports.trials import RUN_STATUS, TAG, params_of, with_steps
from fairtrial.observe import observing
from fairtrial.seeding import trial_seeds

if TYPE_CHECKING:
    from fairtrial.spec import Spec
    from fairtrial.trial import TrialJob, TrialOutcome

FLUSH_SECONDS = 1.0
FLUSH_POINTS = 5000
#: reports waiting to be sent (each a batch of points); past that MLflow is too slow to
#: follow the run, and the mirror stops rather than hold the run's memory
MAX_WAITING = 100_000
CLOSE_SECONDS = 30.0
_STOP = object()


@dataclass(frozen=True)
class Target:
    """Where one fairtrial experiment's trials go: the MLflow experiment ``name`` of
    fairtrial experiment ``root`` (over several tasks, each task's trials go to the whole
    experiment's, with ``task`` among their params)."""

    name: str
    root: str
    task: str | None = None


def targets_of(spec: Spec) -> dict[str, Target]:
    """experiment id -> its target, for ``spec`` and each of its tasks' experiments."""
    out = {spec.experiment_id: Target(spec.name, spec.experiment_id)}
    for child in spec.children:
        out[child.experiment_id] = Target(spec.name, spec.experiment_id, child.task)
    return out


@dataclass
class _Live:
    """A trial attempt whose run is open."""

    run_id: str
    start_ms: int
    counters: dict[str, int] = field(default_factory=dict)
    last_step: int = 0


class MlflowMirror:
    """Mirrors a run's trials to MLflow at ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI``,
    else MLflow's default) while it runs; see the module's docstring. ``close`` ends it."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        tracking_uri: str | None = None,
        console: Console | None = None,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_points: int = FLUSH_POINTS,
        close_seconds: float = CLOSE_SECONDS,
    ) -> None:
        require("mlflow", "mlflow", "Mirroring a run to MLflow")
        self.targets = dict(targets)
        #: the experiment's name, for the lines the mirror says
        self._name = next((t.name for t in self.targets.values()), "EXPERIMENT")
        self.tracking_uri = tracking_uri
        self.console = console or Console(stderr=True)
        self.flush_seconds = flush_seconds
        self.flush_points = flush_points
        self.close_seconds = close_seconds
        #: why the mirror stopped (said once, in one warning line); None while it works
        self.stopped: str | None = None
        self.uri = tracking_uri or ""
        #: trial runs made, and points sent
        self.runs = 0
        self.points = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=MAX_WAITING)
        self._warned = threading.Lock()
        self._closed = False
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[tuple[str, str | None, str], str] = {}
        self._live: dict[tuple[str, int], _Live] = {}
        self._pending: dict[str, list[Any]] = {}
        self._waiting = 0
        self._thread = threading.Thread(target=self._work, name="fairtrial-mlflow-mirror",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    # -- the observer: the driver's side, a queue put each ------------------------------------
    def started(self, job: TrialJob) -> None:
        self._put(("start", job, time.time()))

    def event(self, job: TrialJob, kind: str, payload: Any) -> None:
        if kind == "metrics":
            self._put(("metrics", job, payload))

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None:
        self._put(("end", job, outcome, time.time()))

    def _put(self, item: Any) -> None:
        if self.stopped is not None or self._closed:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._stop(f"MLflow at {self.uri} fell behind the run ({MAX_WAITING} reports waiting)")

    def close(self) -> None:
        """Send what is queued (waiting at most ``close_seconds``), end the arms' runs, and
        say what was mirrored (or why it stopped) in one line."""
        if self._closed:
            return
        self._closed = True
        if self.stopped is None:
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=self.close_seconds)
        self._thread.join(timeout=self.close_seconds)
        if self._thread.is_alive():
            self._stop(
                f"MLflow at {self.uri} did not take the last points within "
                f"{self.close_seconds:.0f} s"
            )
        elif self.stopped is None and self.runs:
            self.console.print(
                f"mirrored {self.runs} trial run(s) ({self.points} points) to MLflow "
                f"experiment '{escape(self._name)}' at {escape(self.uri)}; `fairtrial export "
                f"{escape(self._name)} --to mlflow` adds the verdicts and the report",
                highlight=False,
            )

    def _stop(self, reason: str) -> None:
        """Stop mirroring, saying why once."""
        if not self._warned.acquire(blocking=False):
            return
        self.stopped = reason
        self.console.print(
            f"[bold yellow]warning[/]: the MLflow mirror stopped: {escape(reason)}; the run "
            f"goes on and the ledger keeps everything (`fairtrial export {escape(self._name)} "
            "--to mlflow` sends it later)",
            highlight=False,
        )

    # -- the mirror's thread ------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._client, self.uri = kit.connect(self.tracking_uri, "Mirroring a run to MLflow")
            last = time.monotonic()
            while self.stopped is None:
                wait = None
                if self._waiting:
                    wait = max(0.0, last + self.flush_seconds - time.monotonic())
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._flush()
                    self._end_arms()
                    return
                if item is not None:
                    self._handle(item)
                due = time.monotonic() - last >= self.flush_seconds
                if self._waiting >= self.flush_points or (self._waiting and due):
                    self._flush()
                    last = time.monotonic()
        except FairtrialError as exc:  # could not connect: the line names the URI
            self._stop(str(exc))
        except Exception as exc:  # whatever MLflow raised: the run must go on
            self._stop(f"MLflow at {self.uri}: {kit.one_line(f'{type(exc).__name__}: {exc}')}")

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind, job = item[0], item[1]
        key = (job.trial_id, job.attempt)
        if kind == "start":
            self._live[key] = self._open(job, int(item[2] * 1000))
            return
        live = self._live.get(key)
        if live is None:
            return
        if kind == "metrics":
            points = with_steps(item[2], live.counters)
            if points:
                live.last_step = max(live.last_step, max(p[0] for p in points))
                self._pending.setdefault(live.run_id, []).extend(
                    kit.metric_list(points, live.start_ms)
                )
                self._waiting += len(points)
            return
        del self._live[key]
        self._close_run(job, live, item[2], int(item[3] * 1000))

    def _open(self, job: TrialJob, start_ms: int) -> _Live:
        """The run of a trial that starts: made under its arm's parent, with its params."""
        target = self.targets.get(job.experiment_id) or Target(job.experiment_id,
                                                                job.experiment_id)  # fmt: skip
        mexp = self._experiments.get(target.root)
        if mexp is None:
            mexp = self._experiments[target.root] = kit.experiment(
                self._client, target.name, target.root
            )[0]
            for (task, arm), run_id in kit.arm_runs(self._client, mexp).items():
                self._parents[target.root, task, arm] = run_id
        parent = self._parents.get((target.root, target.task, job.arm))
        if parent is None:
            parent = kit.new_arm_run(self._client, mexp, target.root, job.arm, target.task)
            self._parents[target.root, target.task, job.arm] = parent
        tags = kit.trial_tags(job.experiment_id, job.trial_id, job.attempt, job.arm, job.seed,
                          "running", target.task)  # fmt: skip
        run = self._client.create_run(mexp, start_time=start_ms, tags={**tags, kit.PARENT: parent})
        seeds = trial_seeds(job.root_seed, job.seed)
        kit.send(self._client, run.info.run_id,
                 params=params_of(job.config, job.arm, job.seed, seeds, target.task))  # fmt: skip
        self.runs += 1
        return _Live(str(run.info.run_id), start_ms)

    def _close_run(self, job: TrialJob, live: _Live, outcome: TrialOutcome, end_ms: int) -> None:
        """A trial's last points, its result and its status; then its run ends."""
        from mlflow.entities import Metric

        metrics = self._pending.pop(live.run_id, [])
        self._waiting -= len(metrics)
        if outcome.result is not None:
            key = kit.key_of(job.metric)
            metrics.append(Metric(key, outcome.result, end_ms, live.last_step))
        tags: dict[str, str] = {f"{TAG}status": outcome.status}
        if outcome.error:
            tags[f"{TAG}error"] = outcome.error
        kit.send(self._client, live.run_id, metrics, tags=tags)
        self.points += len(metrics)
        status = RUN_STATUS.get(outcome.status, "FAILED")
        self._client.set_terminated(live.run_id, status, end_time=end_ms)

    def _flush(self) -> None:
        """Send every queued point, one run at a time."""
        pending, self._pending, self._waiting = self._pending, {}, 0
        for run_id, metrics in pending.items():
            kit.send(self._client, run_id, metrics)
            self.points += len(metrics)

    def _end_arms(self) -> None:
        for run_id in self._parents.values():
            self._client.set_terminated(run_id, "FINISHED")


@contextlib.contextmanager
def mirrored(
    spec: Spec,
    mirror: str | None,
    tracking_uri: str | None = None,
    console: Console | None = None,
) -> Iterator[MlflowMirror | None]:
    """While the block runs, the runs started in it are mirrored to ``mirror`` (``"mlflow"``;
    None: not mirrored) at ``tracking_uri``; the mirror is closed when the block ends."""
    if mirror is None:
        if tracking_uri is not None:
            raise FairtrialError("--tracking-uri is for --mirror mlflow")
        yield None
        return
    if mirror != "mlflow":
        raise FairtrialError(f"--mirror {mirror}: only mlflow can be mirrored live")
    observer = MlflowMirror(targets_of(spec), tracking_uri, console)
    try:
        with observing(observer):
            yield observer
    finally:
        observer.close()
