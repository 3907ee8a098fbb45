"""Stop signals: SIGTERM and SIGHUP stop a run as Ctrl-C does (workers stopped, the trials
they ran stored ``interrupted``, exit 128 + signal), and a run killed outright takes its
workers and their commands along instead of leaving them computing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import toy_spec
from fairtrial.ledger import Ledger
from fairtrial.spec import load_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]

#: a recipe whose trials, until the test releases them, wait (in the recipe, as a long
#: training step would); then the toy recipe
SLOW_RECIPE = """
import os, time
from pathlib import Path

import toy


def probe(config, ctx):
    if not Path(__file__).with_name("release").exists():
        (ctx.workdir / "pid").write_text(str(os.getpid()))
        time.sleep(300)
    toy.probe(config, ctx)
"""

RECIPE_SPEC = toy_spec(seeds=2, arms="[arms.noisy]\nnoise = 0.3\n").replace(
    '"toy:probe"', '"slow_recipe:probe"'
)

COMMAND_SPEC = """
[experiment]
name = "cmd"
task = "breast_cancer"
command = "{python} slow_cmd.py --shrink {shrink} --seed {seed}"
seeds = 2

[baseline]
shrink = 1.0

[arms.shrunk]
shrink = 0.9
"""

#: a command that, until the test releases it, starts a program of its own and waits: both
#: must stop with the run
SLOW_CMD = """
import os, subprocess, sys, time
from pathlib import Path

if Path(__file__).with_name("release").exists():
    import cmd_train

    cmd_train.main()
else:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    Path(os.environ["FAIRTRIAL_WORKDIR"], "pid").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(300)
"""


def _procs() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, start time, state), from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(fields[1]), fields[19], fields[0])
    return out


def _descendants(root: int) -> dict[int, str]:
    """The processes below ``root``: pid -> start time (a pid reused later is not them)."""
    procs = _procs()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start, _) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def _alive(tree: dict[int, str]) -> list[int]:
    """The processes of ``tree`` still running (a zombie has ended; a pid reused is not)."""
    procs = _procs()
    alive = []
    for pid, start in tree.items():
        _, now_start, state = procs.get(pid, (0, "", "Z"))
        if now_start == start and state != "Z":
            alive.append(pid)
    return alive


def _wait_gone(tree: dict[int, str], timeout: float = 30.0) -> list[int]:
    """Poll until no process of ``tree`` is alive; what is still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while (left := _alive(tree)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def leftovers() -> Iterator[list[dict[int, str]]]:
    """Process trees whose survivors are killed after the test (when it failed)."""
    trees: list[dict[int, str]] = []
    yield trees
    for tree in trees:
        for pid in _alive(tree):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _statuses(db: Path, experiment_id: str) -> list[str]:
    led = Ledger(db)
    try:
        return sorted(t.status for t in led.trials(experiment_id))
    finally:
        led.close()


def _start(
    path: Path, db: Path, cwd: Path, backend: str, blocked: int, leftovers: list[dict[int, str]]
) -> tuple[list[str], subprocess.Popen[str], dict[int, str]]:
    """Start `fairtrial run` with ``blocked`` workers and return once as many trials are
    running and blocked (each wrote its pid file), with the run's processes below it then."""
    cmd = [sys.executable, "-m", "fairtrial.cli", "run", str(path), "--store", str(db),
           "--backend", backend, "--workers", str(blocked), "--no-report"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    eid = load_spec(path).experiment_id
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        pids = list(cwd.glob(".fairtrial/trials/*/*/*/pid"))
        if len(pids) >= blocked and db.exists() and _statuses(db, eid).count("running") >= blocked:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"the trials never ran: {proc.communicate()[1][-3000:]}")
    tree = _descendants(proc.pid)
    leftovers.append(tree)
    return cmd, proc, tree


def _stop(
    proc: subprocess.Popen[str], tree: dict[int, str], sig: int, db: Path, path: Path,
    running: int,
) -> None:  # fmt: skip
    """Send ``sig`` to the run and check what it leaves: its status, its message, no
    process, no trial ``running``. SIGHUP goes to the run's process group, workers included,
    as a terminal that closes sends it; SIGTERM to the run alone, as a process manager may."""
    if sig == signal.SIGHUP:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    proc.wait(timeout=60)  # not communicate(): workers left behind would hold its pipes
    assert proc.returncode == 128 + sig
    assert _wait_gone(tree) == [], "processes of the stopped run still alive"
    _, err = proc.communicate(timeout=60)
    name = signal.Signals(sig).name
    message = f"interrupted by {name}: finished trials are kept; run the same command to resume"
    assert message in err and "Traceback" not in err, err[-3000:]
    statuses = _statuses(db, load_spec(path).experiment_id)
    assert "running" not in statuses and statuses.count("interrupted") == running, statuses


def _resume(cmd: list[str], db: Path, path: Path, cwd: Path, running: int) -> None:
    """A second run (inline: no workers to start) finishes every trial, the interrupted
    ones as their next attempt."""
    (cwd / "release").touch()
    cmd = [*cmd, "--backend", "inline"]  # the last --backend counts
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    led = Ledger(db)
    try:
        trials = led.trials(load_spec(path).experiment_id)
        assert [t.status for t in trials] == ["finished"] * 4
        assert sorted(t.attempt for t in trials) == [1] * (4 - running) + [2] * running
    finally:
        led.close()


@pytest.mark.parametrize(
    ("backend", "sig"),
    [("local", signal.SIGTERM), ("local", signal.SIGHUP), ("inline", signal.SIGTERM)],
)
def test_a_stop_signal_stops_the_run_like_ctrl_c(
    write_spec: Callable[..., Path],
    tmp_path: Path,
    leftovers: list[dict[int, str]],
    backend: str,
    sig: int,
) -> None:
    path = write_spec(RECIPE_SPEC)
    (tmp_path / "slow_recipe.py").write_text(SLOW_RECIPE)
    db = tmp_path / "run.db"
    running = 2 if (backend, sig) == ("local", signal.SIGTERM) else 1
    cmd, proc, tree = _start(path, db, tmp_path, backend, blocked=running, leftovers=leftovers)
    if backend == "local":
        assert len(tree) >= running, tree  # the workers (and multiprocessing's resource tracker)
    _stop(proc, tree, sig, db, path, running)
    if sig == signal.SIGTERM and backend == "local":  # the same ledger state for the others
        _resume(cmd, db, path, tmp_path, running)


def test_sigterm_stops_a_command_and_what_it_started(
    write_spec: Callable[..., Path], tmp_path: Path, leftovers: list[dict[int, str]]
) -> None:
    path = write_spec(COMMAND_SPEC)
    (tmp_path / "slow_cmd.py").write_text(SLOW_CMD)
    db = tmp_path / "run.db"
    cmd, proc, tree = _start(path, db, tmp_path, "local", blocked=1, leftovers=leftovers)
    started = {int(p) for f in tmp_path.glob(".fairtrial/trials/*/*/*/pid")
               for p in f.read_text().split()}  # fmt: skip
    assert len(started) == 2 and started <= set(tree)  # the command and the program it started
    _stop(proc, tree, signal.SIGTERM, db, path, running=1)
    _resume(cmd, db, path, tmp_path, running=1)


def test_workers_and_commands_exit_when_the_run_is_killed(
    write_spec: Callable[..., Path], tmp_path: Path, leftovers: list[dict[int, str]]
) -> None:
    path = write_spec(COMMAND_SPEC)
    (tmp_path / "slow_cmd.py").write_text(SLOW_CMD)
    db = tmp_path / "run.db"
    _, proc, tree = _start(path, db, tmp_path, "local", blocked=1, leftovers=leftovers)
    assert len(tree) >= 3, tree  # the worker, its command, what that started
    proc.kill()  # the run alone: nothing of it can clean up
    proc.wait(timeout=60)
    # its workers notice and exit, taking their commands (and what those started) along
    assert _wait_gone(tree) == [], "workers of a killed run kept computing"
    proc.communicate(timeout=60)


def test_stop_signals_are_handled_only_where_python_left_the_default() -> None:
    """In the main thread, SIGTERM and SIGHUP with their default action raise RunInterrupted
    (a second one during the stop is ignored); an ignored signal (nohup) or a handler of the
    caller's stays; each is back as it was after the block, and no thread but the main one
    installs anything."""
    from fairtrial.backends.base import RunInterrupted, stop_on_signals

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("the caller's handler ran")

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with pytest.raises(RunInterrupted) as caught, stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored, as nohup asked
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # the stop is under way: ignored
                time.sleep(0.1)
        assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)

        # a library that turns the handler's exception into a plain KeyboardInterrupt (Ray
        # does) does not lose the signal
        with pytest.raises(RunInterrupted) as caught, stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                raise KeyboardInterrupt from None
        assert caught.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN

        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        seen = []
        thread = threading.Thread(
            target=lambda: seen.append(stop_on_signals().__enter__() or signal.getsignal(15))
        )
        thread.start()
        thread.join()
        assert seen == [mine]  # nothing installed outside the main thread
        with stop_on_signals():
            assert signal.getsignal(signal.SIGTERM) is mine
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, mine)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@pytest.mark.ray
def test_the_ray_backend_keeps_the_runs_sigterm_handler() -> None:
    """ray.init makes SIGTERM exit the driver at once (sys.exit); the Ray backend puts the
    run's handler back, so that SIGTERM stops a Ray run as Ctrl-C does (its tasks cancelled,
    its trials recorded interrupted, as the backend does for any KeyboardInterrupt)."""
    pytest.importorskip("ray")
    from fairtrial.backends.ray import RayBackend

    def runs(signum: int, frame: object) -> None:
        raise AssertionError("no signal is sent in this test")

    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, runs)
    try:
        RayBackend(workers=1).run(iter([]), sink=None, total=0)  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGTERM) is runs
    finally:
        signal.signal(signal.SIGTERM, before)
