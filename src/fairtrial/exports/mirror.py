"""``fairtrial run --mirror mlflow``: each trial's MLflow run made and filled while it runs.

:class:`MlflowMirror` is an observer of the run (:mod:`fairtrial.observe`): the driver tells
it that a trial started, sent points, ended, and it only queues that (a trial's ``ctx.log``
runs in the worker and is not touched at all). A thread of its own takes the queue, a batch
at a time, to a process of its own (:mod:`fairtrial.exports.mirrorproc`), which makes the runs
and sends the points with ``log_batch`` every :data:`FLUSH_SECONDS` or :data:`FLUSH_POINTS`
points. MLflow spends a few hundred microseconds of Python on each point it is sent: in the
driver's process, even in a thread, that would hold the interpreter lock the driver needs to
read its workers and write the ledger; in a process of its own it holds nothing of the run's.

A mirror never fails the run and never costs the ledger anything: when MLflow cannot be
reached, refuses a call, or falls behind by more than :data:`MAX_WAITING` points, it says so in
one warning line and stops; the ledger has everything, and ``fairtrial export --to mlflow``
later sends what is missing (it replaces the runs the mirror left unfinished). At the run's
end the mirror sends what is queued, waiting at most :data:`CLOSE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from fairtrial.errors import FairtrialError, require
from fairtrial.exports.mirrorproc import Target, write_frame
from fairtrial.observe import observing

if TYPE_CHECKING:
    from fairtrial.spec import Spec
    from fairtrial.trial import TrialJob, TrialOutcome

FLUSH_SECONDS = 1.0
FLUSH_POINTS = 5000
#: points queued and not yet taken by the mirror's process: past that MLflow cannot follow
#: the run, and the mirror stops rather than hold the run's memory
MAX_WAITING = 1_000_000
CLOSE_SECONDS = 30.0
#: the mirror's process: this interpreter, with this process's import path
_BOOT = "import sys; sys.path[:] = {path!r}; from fairtrial.exports.mirrorproc import main; main()"
_STOP = object()


def targets_of(spec: Spec) -> dict[str, Target]:
    """experiment id -> its target, for ``spec`` and each of its tasks' experiments."""
    out = {spec.experiment_id: Target(spec.name, spec.experiment_id)}
    for child in spec.children:
        out[child.experiment_id] = Target(spec.name, spec.experiment_id, child.task)
    return out


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
        self.console = console or Console(stderr=True)
        self.close_seconds = close_seconds
        #: why the mirror stopped (said once, in one warning line); None while it works
        self.stopped: str | None = None
        self.uri = tracking_uri or "MLflow's default tracking URI"
        #: trial runs made, and points sent (known once the mirror's process is done)
        self.runs = 0
        self.points = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting = 0
        self._warned = threading.Lock()
        self._closed = False
        self._done = threading.Event()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (the process's life long)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format(path=list(sys.path))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # Ctrl-C stops the run; the mirror still sends what it has
        )
        assert self._proc.stdin is not None
        settings = {"targets": self.targets, "tracking_uri": tracking_uri,
                    "flush_seconds": flush_seconds, "flush_points": flush_points}  # fmt: skip
        write_frame(self._proc.stdin, [settings])  # a few hundred bytes: the pipe holds them
        for work in (self._feed, self._read):
            threading.Thread(target=work, name="fairtrial-mlflow-mirror", daemon=True).start()

    # -- the observer: the driver's side, a queue put each ------------------------------------
    def started(self, job: TrialJob) -> None:
        self._put(("start", job, time.time()))

    def event(self, job: TrialJob, kind: str, payload: Any) -> None:
        if kind == "metrics":
            self._put(("metrics", (job.trial_id, job.attempt), payload), len(payload))

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None:
        self._put(("end", (job.trial_id, job.attempt), job.metric, outcome, time.time()))

    def _put(self, item: Any, points: int = 0) -> None:
        if self.stopped is not None or self._closed:
            return
        if self._waiting > MAX_WAITING:
            self._stop(f"MLflow at {self.uri} fell behind the run by {self._waiting} points")
            return
        self._waiting += points
        self._queue.put(item)

    def close(self) -> None:
        """Send what is queued (waiting at most ``close_seconds``), end the arms' runs, and
        say what was mirrored (or why it stopped) in one line."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if not self._done.wait(self.close_seconds):
            self._stop(
                f"MLflow at {self.uri} did not take the last points within "
                f"{self.close_seconds:.0f} s"
            )
            self._proc.kill()
        elif self.stopped is None and self.runs:
            self.console.print(
                f"mirrored {self.runs} trial run(s) ({self.points} points) to MLflow "
                f"experiment '{escape(self._name)}' at {escape(self.uri)}; `fairtrial export "
                f"{escape(self._name)} --to mlflow` adds the verdicts and the report",
                highlight=False,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        for stream in (self._proc.stdout, self._stderr):
            if stream is not None:
                stream.close()

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

    # -- the mirror's thread: the queue to the mirror's process, and what it says back ---------
    def _feed(self) -> None:
        """Take what is queued to the mirror's process, as many reports a frame as wait."""
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while True:
                items = [self._queue.get()]
                while len(items) < 1000:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = items[-1] is _STOP
                if stop:
                    items.pop()
                if items:
                    write_frame(stdin, items)
                    self._waiting -= sum(len(i[2]) for i in items if i[0] == "metrics")
                if stop:
                    stdin.close()
                    return
        except (OSError, ValueError):  # the mirror's process is gone: _read says why
            return

    def _read(self) -> None:
        """What the mirror's process says: its URI, then done, or why it stopped."""
        stdout = self._proc.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):  # closed by close() after a kill
            for line in stdout:
                said = json.loads(line)
                if "connected" in said:
                    self.uri = said["connected"]
                elif "stopped" in said:
                    self._stop(said["stopped"])
                elif "done" in said:
                    self.runs, self.points = said["done"]["runs"], said["done"]["points"]
                    self._done.set()
        if not self._done.is_set():
            code = self._proc.wait()
            if self.stopped is None:
                self._stop(f"its process ended (exit status {code}){self._last_error()}")
            self._done.set()

    def _last_error(self) -> str:
        """The last line the mirror's process wrote to stderr, as ': LINE'."""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            if lines:
                return f": {lines[-1][:300]}"
        return ""


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
