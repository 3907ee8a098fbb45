"""The live MLflow mirror's own process: what it reads from the run, and what it sends MLflow.

:class:`fairtrial.exports.mirror.MlflowMirror` starts this module in a process of its own, so
that MLflow's work (a few hundred microseconds of Python per point in ``log_batch``) never
holds the driver's interpreter lock. It reads frames from stdin (a 4-byte length, then a
pickled list of reports: a trial started, sent points, ended), makes each trial's run as
``fairtrial export --to mlflow`` names it (the same experiment, parents, params and tags),
sends the points with ``log_batch`` every ``flush_seconds`` or ``flush_points`` points,
whichever comes first (a trial's last points before its result and status), and at the end
of stdin sends the rest, ends the arms' runs and exits. It says how it went in JSON lines on
stdout: ``{"connected": URI}``, then ``{"done": {...}}`` or ``{"stopped": REASON}`` (then it
exits: the run goes on without it).
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from fairtrial.errors import FairtrialError
from fairtrial.exports import mlflowkit as kit
from fairtrial.exports.trials import RUN_STATUS, TAG, params_of, with_steps
from fairtrial.seeding import trial_seeds

_END = object()
#: reports (each up to a worker's flush of points) read ahead of MLflow: past that the pipe
#: fills and the run's side counts what waits (and stops the mirror when MLflow cannot follow)
READ_AHEAD = 200


@dataclass(frozen=True)
class Target:
    """Where one fairtrial experiment's trials go: the MLflow experiment ``name`` of
    fairtrial experiment ``root`` (over several tasks, each task's trials go to the whole
    experiment's, with ``task`` among their params)."""

    name: str
    root: str
    task: str | None = None


@dataclass
class _Live:
    """A trial attempt whose run is open."""

    run_id: str
    start_ms: int
    counters: dict[str, int] = field(default_factory=dict)
    last_step: int = 0


def write_frame(out: IO[bytes], items: list[Any]) -> None:
    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(data).to_bytes(4, "big") + data)
    out.flush()


def read_frame(stream: IO[bytes]) -> list[Any] | None:
    """The next frame's reports; None at the end of the stream."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    data = stream.read(int.from_bytes(head, "big"))
    return list(pickle.loads(data))


class Sender:
    """Makes the runs and sends the points of the reports it is given (in this process)."""

    def __init__(
        self,
        targets: dict[str, Target],
        tracking_uri: str | None,
        flush_seconds: float,
        flush_points: int,
    ) -> None:
        self.targets = targets
        self.tracking_uri = tracking_uri
        self.uri = tracking_uri or ""
        self.flush_seconds = flush_seconds
        self.flush_points = flush_points
        self.runs = 0
        self.points = 0
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[tuple[str, str | None, str], str] = {}
        self._live: dict[tuple[str, int], _Live] = {}
        self._pending: dict[str, list[Any]] = {}
        self._waiting = 0

    def connect(self) -> None:
        self._client, self.uri = kit.connect(self.tracking_uri, "Mirroring a run to MLflow")

    def serve(self, reports: queue.Queue[Any]) -> None:
        """Handle ``reports`` until the end marker, sending what waits at least every
        ``flush_seconds``; then send the rest and end the arms' runs."""
        last = time.monotonic()
        while True:
            wait = None
            if self._waiting:
                wait = max(0.0, last + self.flush_seconds - time.monotonic())
            try:
                item = reports.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _END:
                self._flush()
                for run_id in self._parents.values():
                    self._client.set_terminated(run_id, "FINISHED")
                return
            if item is not None:
                self._handle(item)
            due = time.monotonic() - last >= self.flush_seconds
            if self._waiting >= self.flush_points or (self._waiting and due):
                self._flush()
                last = time.monotonic()

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "start":
            job = item[1]
            self._live[job.trial_id, job.attempt] = self._open(job, int(item[2] * 1000))
            return
        live = self._live.get(item[1])
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
        del self._live[item[1]]
        _, _, metric, outcome, ended = item
        self._close_run(live, metric, outcome, int(ended * 1000))

    def _open(self, job: Any, start_ms: int) -> _Live:
        """The run of a trial that starts: made under its arm's parent, with its params."""
        eid = job.experiment_id
        target = self.targets.get(eid) or Target(eid, eid)
        mexp = self._experiments.get(target.root)
        if mexp is None:
            mexp = kit.experiment(self._client, target.name, target.root)[0]
            self._experiments[target.root] = mexp
            for (task, arm), run_id in kit.arm_runs(self._client, mexp).items():
                self._parents[target.root, task, arm] = run_id
        parent = self._parents.get((target.root, target.task, job.arm))
        if parent is None:
            parent = kit.new_arm_run(self._client, mexp, target.root, job.arm, target.task)
            self._parents[target.root, target.task, job.arm] = parent
        tags = kit.trial_tags(
            eid, job.trial_id, job.attempt, job.arm, job.seed, "running", target.task
        )
        run = self._client.create_run(mexp, start_time=start_ms, tags={**tags, kit.PARENT: parent})
        seeds = trial_seeds(job.root_seed, job.seed)
        params = params_of(job.config, job.arm, job.seed, seeds, target.task)
        kit.send(self._client, run.info.run_id, params=params)
        self.runs += 1
        return _Live(str(run.info.run_id), start_ms)

    def _close_run(self, live: _Live, metric: str, outcome: Any, end_ms: int) -> None:
        """A trial's last points, its result and its status; then its run ends."""
        from mlflow.entities import Metric

        metrics = self._pending.pop(live.run_id, [])
        self._waiting -= len(metrics)
        if outcome.result is not None:
            metrics.append(Metric(kit.key_of(metric), outcome.result, end_ms, live.last_step))
        tags: dict[str, str] = {f"{TAG}status": outcome.status}
        if outcome.error:
            tags[f"{TAG}error"] = outcome.error
        kit.send(self._client, live.run_id, metrics, tags=tags)
        self.points += len(metrics)
        status = RUN_STATUS.get(outcome.status, "FAILED")
        self._client.set_terminated(live.run_id, status, end_time=end_ms)

    def _flush(self) -> None:
        """Send every point waiting, one run at a time."""
        pending, self._pending, self._waiting = self._pending, {}, 0
        for run_id, metrics in pending.items():
            kit.send(self._client, run_id, metrics)
            self.points += len(metrics)


def _pump(stream: IO[bytes], reports: queue.Queue[Any]) -> None:
    """Frames from ``stream`` into ``reports``, then the end marker."""
    try:
        while (items := read_frame(stream)) is not None:
            for item in items:
                reports.put(item)
    finally:
        reports.put(_END)


def main() -> None:
    """The mirror process: its settings in the first frame, then reports until stdin ends."""
    # what MLflow prints must not mix with the status lines: those get stdout's own copy
    status = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(message: dict[str, Any]) -> None:
        status.write(json.dumps(message) + "\n")

    stdin = sys.stdin.buffer
    settings = read_frame(stdin)
    if not settings:
        return
    sender = Sender(**settings[0])
    reports: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD)
    threading.Thread(target=_pump, args=(stdin, reports), daemon=True).start()
    try:
        sender.connect()
        say({"connected": sender.uri})
        sender.serve(reports)
    except FairtrialError as exc:  # could not connect: the line names the URI
        say({"stopped": str(exc)})
        return
    except Exception as exc:  # whatever MLflow raised: the run goes on without the mirror
        say({"stopped": f"MLflow at {sender.uri}: {kit.one_line(f'{type(exc).__name__}: {exc}')}"})
        return
    say({"done": {"runs": sender.runs, "points": sender.points, "uri": sender.uri}})


if __name__ == "__main__":
    main()
