"""Leases: runs on several hosts sharing one ledger never re-run each other's live trials,
a dead run's trials are taken over (at once when it provably died on this machine, when its
lease expires otherwise), and a result that arrives after a takeover is kept, not dropped."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import toy_spec
from fairtrial.backends import InlineBackend
from fairtrial.ledger import Ledger, TrialRow
from fairtrial.ledger import schema as s
from fairtrial.ledger.lease import _domain, owner_id, provably_dead
from fairtrial.plan import plan_trials
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

ARMS = "[arms.noisy]\nnoise = 0.3\n"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(lease: float) -> dict[str, str]:
    return {**os.environ, "FAIRTRIAL_LEASE": str(lease), "PYTHONPATH": SRC}


def _cmd(path: Path, store: str, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "fairtrial.cli", "run", str(path), "--store", store,
            "--workers", str(workers), "--no-report"]  # fmt: skip


def _on_another_host(cmd: list[str]) -> list[str]:
    """``cmd`` as a process of another machine: its own hostname and PID namespace, so
    nothing of this machine (hostname, PIDs) can tell whether it is alive."""
    return ["unshare", "-u", "-p", "-f", "--mount-proc", "sh", "-c",
            'hostname other-host && exec "$@"', "sh", *cmd]  # fmt: skip


@pytest.fixture
def foreign() -> Iterator[None]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must test leases across hosts: unshare as root is needed")
        pytest.skip("needs unshare as root to start a run as another host")
    yield


def _wait(store: str, eid: str, pred: Callable[[list[TrialRow]], bool]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            led = Ledger(store)
            try:
                if pred(led.trials(eid)):
                    return
            finally:
                led.close()
        except Exception:  # the ledger is being created by the run
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the run")


def _running(rows: list[TrialRow]) -> int:
    return sum(r.status == "running" for r in rows)


@pytest.mark.slow
def test_two_hosts_never_re_run_each_others_running_trials(
    foreign: None, store_url: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """A run on another host holds trials for longer than the lease: its heartbeat keeps
    them. A second run leaves them alone and says who holds them; every trial runs once."""
    path = write_spec(toy_spec(seeds=3, arms=ARMS).replace("sleep = 0.0", "sleep = 2.0"))
    eid = load_spec(path).experiment_id
    a = subprocess.Popen(_on_another_host(_cmd(path, store_url)), cwd=tmp_path, env=_env(1),
                         start_new_session=True, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait(store_url, eid, lambda rows: _running(rows) >= 2)
        time.sleep(1.5)  # past the lease: only the heartbeat keeps the trials held
        b = subprocess.run(_cmd(path, store_url, workers=1), cwd=tmp_path, env=_env(1),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        out_a, _ = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    said_b = b.stdout + b.stderr
    assert "Traceback" not in out_a + said_b
    # the run that ends last finds every trial finished; one that ends while the other still
    # holds a trial says so and exits 1 (which one that is depends on the machine's timing)
    assert 0 in (a.returncode, b.returncode), out_a + said_b
    if a.returncode != 0:
        assert "held by another live run" in out_a, out_a
    led = Ledger(store_url)
    rows = led.trials(eid)
    attempts = led.attempts([r.id for r in rows])
    led.close()
    assert [r.status for r in rows] == ["finished"] * 6
    assert all(r.attempt == 1 for r in rows), "a trial ran twice"
    assert len(attempts) == 6 and not any(x["superseded"] for x in attempts)
    owners = {x["owner"].split(":")[0] for x in attempts}
    assert owners == {"other-host", platform.node().replace(":", "_")}, owners
    if b.returncode != 0:  # b ended while a still held trials: it says so, and who holds them
        assert "held by another live run" in said_b and "other-host pid" in said_b


@pytest.mark.slow
def test_a_dead_run_on_another_host_is_taken_over_when_its_lease_expires(
    foreign: None, store_url: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec(toy_spec(seeds=2, arms=ARMS).replace("sleep = 0.0", "sleep = 1.0"))
    eid = load_spec(path).experiment_id
    a = subprocess.Popen(_on_another_host(_cmd(path, store_url)), cwd=tmp_path, env=_env(60),
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    _wait(store_url, eid, lambda rows: _running(rows) >= 2)
    os.killpg(a.pid, signal.SIGKILL)  # the other host goes down mid-trial
    a.wait()
    # within its lease (60 s) nothing on this machine can tell it died: its trials stay
    # held, the others run, and the run says it is not complete
    b = subprocess.run(_cmd(path, store_url), cwd=tmp_path, env=_env(60),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert b.returncode == 1, b.stdout + b.stderr
    said = b.stdout + b.stderr
    assert "held by another live run" in said and "other-host pid 1" in said
    led = Ledger(store_url)
    held = {r.id for r in led.trials(eid) if r.status == "running"}
    led.close()
    assert len(held) == 2
    # with a lease of 1 s it has expired: the next run takes them over as attempt 2
    c = subprocess.run(_cmd(path, store_url), cwd=tmp_path, env=_env(1),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert c.returncode == 0, c.stdout + c.stderr
    led = Ledger(store_url)
    rows = {r.id: r for r in led.trials(eid)}
    led.close()
    assert all(r.status == "finished" for r in rows.values())
    assert {i for i, r in rows.items() if r.attempt == 2} == held


def test_a_trial_of_a_dead_run_whose_pid_was_reused_is_run(
    store_url: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """The run that held two trials died and its PID now belongs to another process: the
    trials are run again (an owner id from before leases has no lease; a current one names
    the process start time, which the new process does not share)."""
    spec = load_spec(write_spec(toy_spec(seeds=2)))
    led = Ledger(store_url)
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    ids = [r.id for r in led.trials(spec.experiment_id)]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = owner_id().split(":")
        stale = [
            f"{platform.node()}:{other.pid}",  # before leases: host:pid, no heartbeat
            f"{me[0]}:{other.pid}:1:{_domain()}",  # started at tick 1: not this process
        ]
        assert not provably_dead(stale[0]) and provably_dead(stale[1])
        now = led.now()
        with led.engine.begin() as c:
            for tid, owner, beat in zip(ids, stale, (None, now), strict=False):
                c.execute(
                    s.trials.update()
                    .where(s.trials.c.id == tid)
                    .values(status="running", owner=owner, heartbeat_at=beat, result=None)
                )
        summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    finally:
        other.kill()
        other.wait()
    assert summary.complete and summary.ran == 2 and summary.elsewhere == 0
    rows = {r.id: r for r in led.trials(spec.experiment_id)}
    assert [rows[i].attempt for i in ids[:2]] == [2, 2]
    led.close()


def test_a_live_lease_is_respected_and_a_late_result_is_kept(
    ledger: Ledger, write_spec: Callable[..., Path]
) -> None:
    """Claims honour a current lease; an attempt that ends after a takeover is stored as a
    superseded attempt with its result, and the trial keeps the newer attempt's."""
    spec = load_spec(write_spec(toy_spec(seeds=2)))
    run_experiment(spec, ledger, InlineBackend(), show_progress=False)
    plan = plan_trials(spec, ledger.trials(spec.experiment_id)[0].code_hash)[0]
    tid = plan.trial_id
    seen = ledger.trial(tid).attempt
    a = ledger.claim(tid, seen, "host-a:10:5:x", lease=60)
    assert a == seen + 1
    assert ledger.claim(tid, a, "host-b:20:7:y", lease=60) is None, "a live lease was taken"
    assert ledger.renew("host-a:10:5:x") == 1
    with ledger.engine.begin() as c:  # host a goes quiet for longer than the lease
        c.execute(s.trials.update().values(heartbeat_at=ledger.now() - 61))
    b = ledger.claim(tid, a, "host-b:20:7:y", lease=60)
    assert b == a + 1
    assert not ledger.finish(tid, a, status="finished", result=0.5, owner="host-a:10:5:x")
    assert ledger.trial(tid).status == "running", "the late ending must not touch attempt b"
    assert ledger.finish(tid, b, status="finished", result=0.75, owner="host-b:20:7:y")
    t = ledger.trial(tid)
    assert (t.status, t.attempt, t.result, t.owner, t.heartbeat_at) == (
        "finished", b, 0.75, None, None,
    )  # fmt: skip
    late = {x["attempt"]: x for x in ledger.attempts([tid])}
    assert (late[a]["result"], late[a]["superseded"], late[a]["owner"]) == (0.5, 1, "host-a:10:5:x")
    assert (late[b]["result"], late[b]["superseded"]) == (0.75, 0)


@pytest.mark.slow
def test_a_paused_run_loses_its_lease_and_its_late_results_are_kept(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """A run stops answering (SIGSTOP: a hung host, a network partition) past its lease;
    another run takes its trials over and finishes them. When the first resumes, its
    results are kept as superseded attempts and it says so."""
    path = write_spec(toy_spec(seeds=2).replace("sleep = 0.0", "sleep = 1.0"))
    store = str(tmp_path / "paused.db")
    eid = load_spec(path).experiment_id
    a = subprocess.Popen(_cmd(path, store), cwd=tmp_path, env=_env(1), start_new_session=True,
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait(store, eid, lambda rows: _running(rows) == 2)
        os.killpg(a.pid, signal.SIGSTOP)
        time.sleep(1.5)
        b = subprocess.run(_cmd(path, store), cwd=tmp_path, env=_env(1),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert b.returncode == 0, b.stdout + b.stderr
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    out_a, _ = a.communicate(timeout=120)
    assert "late" in out_a and "superseded" in out_a, out_a
    led = Ledger(store)
    rows = led.trials(eid)
    attempts = led.attempts([r.id for r in rows])
    led.close()
    assert [(r.status, r.attempt) for r in rows] == [("finished", 2)] * 2
    late = [x for x in attempts if x["superseded"]]
    assert len(late) == 2 and all(x["status"] == "finished" and x["result"] for x in late)
    cmd = [sys.executable, "-m", "fairtrial.cli", "status", eid, "--store", store]
    status = subprocess.run(cmd, cwd=tmp_path, env=_env(1), capture_output=True, text=True)
    assert status.returncode == 0 and "2 superseded attempt(s)" in status.stdout, status.stdout
