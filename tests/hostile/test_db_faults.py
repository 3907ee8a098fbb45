"""Database faults, on real servers and real files: a PostgreSQL restart in the middle of a run,
a PostgreSQL gone for good, corrupt and read-only SQLite ledgers, and runs that all start at
the same moment on a new ledger."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import make_url

from conftest import toy_spec
from fairtrial.cli import main
from fairtrial.ledger import Ledger
from fairtrial.ledger import schema as s
from fairtrial.ledger.faults import ENV_WINDOW
from fairtrial.plan import TrialPlan

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARMS = "[arms.noisy]\nnoise = 0.3\n"


def _spec(**kwargs: Any) -> str:
    """The toy spec on mnist1d: generated data, no scikit-learn to import (each run here is a
    process of its own)."""
    return toy_spec(**kwargs).replace('task = "digits"', 'task = "mnist1d"')


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FAIRTRIAL_STORE"}
    return {**env, "COLUMNS": "200", **extra}


def _run_cmd(spec: Path, store: str) -> list[str]:
    return [sys.executable, "-m", "fairtrial.cli", "run", str(spec), "--store", store,
            "--backend", "inline", "--no-report"]  # fmt: skip


def _error_line(stderr: str) -> str:
    """The run's last line, which must be its one error line, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


# -- a PostgreSQL server of this module's own, to stop and start ---------------------------------
class OwnPostgres:
    """A server started by scripts/postgres.sh in a folder of its own: stopping it hurts no
    other test."""

    def __init__(self, folder: Path, bindir: str) -> None:
        self.folder, self.bindir = folder, bindir
        out = subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "start", str(folder)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        if out.returncode != 0:
            pytest.fail(f"scripts/postgres.sh could not start a server: {out.stderr}")
        self.url = out.stdout.strip()
        self.port = make_url(self.url).port

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [f"{self.bindir}/pg_ctl", "-D", str(self.folder / "data"), *args]
        if os.geteuid() == 0:  # the server runs as postgres (scripts/postgres.sh)
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        assert self.pg_ctl("-m", "fast", "-w", "stop").returncode == 0

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F -c max_connections=200"
        out = self.pg_ctl("-l", str(self.folder / "log"), "-w", "-o", opts, "start")
        assert out.returncode == 0, out.stderr

    def ensure_running(self) -> None:
        if self.pg_ctl("status").returncode != 0:
            self.start()

    def database(self) -> str:
        """A fresh database on this server; its URL (with a password the server ignores, to
        see that messages hide it)."""
        import psycopg

        name = f"ft_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        u = make_url(self.url).set(password="s3cret", database=name)
        return u.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    pytest.importorskip("psycopg")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins and not os.environ.get("CI"):
        pytest.skip("no PostgreSQL server binaries (scripts/postgres.sh installs them as root)")
    bindir = str(Path(bins[-1]).parent) if bins else ""
    # not under pytest's folder: the server's user (postgres, when root runs the tests) must
    # reach it (scripts/postgres.sh gives it this folder)
    folder = Path(tempfile.mkdtemp(prefix="fairtrial-pg-"))
    server = OwnPostgres(folder, bindir)
    if not bindir:  # installed by scripts/postgres.sh just now
        server.bindir = str(Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent)
    try:
        yield server
    finally:
        subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "stop", str(folder)],
                       capture_output=True, timeout=60)  # fmt: skip


def _finished(url: str) -> int:
    """Finished trials in the ledger at ``url`` (0 while it has no tables yet)."""
    import psycopg

    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM trials WHERE status = 'finished'").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def _wait_finished(url: str, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while _finished(url) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run finished no trial"
        time.sleep(0.1)


def test_a_postgres_restart_in_the_middle_of_a_run_is_ridden_out(
    own_postgres: OwnPostgres, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    own_postgres.ensure_running()
    url = own_postgres.database()
    path = write_spec(_spec(seeds=3, arms=ARMS).replace("sleep = 0.0", "sleep = 0.4"))
    proc = subprocess.Popen(_run_cmd(path, url), cwd=tmp_path, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_finished(url, 1, proc)
    own_postgres.stop()  # the server goes away for a second, as in a restart
    time.sleep(1)
    own_postgres.start()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "did not answer" in err and "answers again" in err, err
    assert "s3cret" not in err
    led = Ledger(url)
    try:
        eid = led.experiments()[0].id
        trials = led.trials(eid)
        assert len(trials) == 6
        assert all(t.status == "finished" and t.attempt == 1 for t in trials)
        evals = led.test_evaluations(eid)
        assert sorted(e["trial_id"] for e in evals) == sorted(t.id for t in trials)  # once each
        for t in trials:  # no metric point stored twice
            points = [(m[1], m[3]) for m in led.metrics(t.id)]
            assert len(points) == len(set(points))
    finally:
        led.close()


def test_a_postgres_gone_for_good_ends_the_run_with_one_line(
    own_postgres: OwnPostgres, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    own_postgres.ensure_running()
    url = own_postgres.database()
    path = write_spec(_spec(seeds=3, arms=ARMS).replace("sleep = 0.0", "sleep = 0.4"))
    cmd = _run_cmd(path, url)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(**{ENV_WINDOW: "2"}), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_finished(url, 1, proc)
        own_postgres.stop()
        _, err = proc.communicate(timeout=120)  # the retries end: the window is 2 s
    finally:
        own_postgres.ensure_running()
    assert proc.returncode == 2, err
    line = _error_line(err)
    assert "is unreachable" in line and "run again to resume" in line, line
    assert "still after" in line, "it retried, and gave up"
    assert "s3cret" not in err and "fairtrial:***@127.0.0.1" in line
    # the finished trials are safe; the one cut short is left for the next run to resume
    led = Ledger(url)
    try:
        trials = led.trials(led.experiments()[0].id)
        done = [t for t in trials if t.status == "finished"]
        assert len(done) >= 1 and all(t.result is not None for t in done)
        assert {t.status for t in trials} <= {"finished", "running", "pending"}
    finally:
        led.close()


# -- corrupt and read-only SQLite files ----------------------------------------------------------
@pytest.fixture(scope="module")
def good_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ledger of one finished run (2 arms × 2 seeds) and its spec: (ledger, spec)."""
    folder = tmp_path_factory.mktemp("good-ledger")
    shutil.copy(ROOT / "tests" / "recipes" / "toy.py", folder / "toy.py")
    spec = folder / "spec.toml"
    spec.write_text(_spec(name="toy", seeds=2, arms=ARMS))
    db = folder / "ledger.db"
    out = subprocess.run(_run_cmd(spec, str(db)), cwd=folder, env=_env(), text=True,
                         capture_output=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert not (folder / "ledger.db-wal").exists(), "the run closed the ledger cleanly"
    return db, spec


def _corrupt(data: bytes, how: str, db: Path) -> bytes:
    rng = random.Random(how)  # the same bytes every run
    out = bytearray(data)
    if how == "truncated":
        return bytes(out[: len(out) // 2 + 100])
    if how == "random header":
        out[:100] = rng.randbytes(100)
    elif how == "random page":
        # the root page of the metrics table: a b-tree page in the middle of the file
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'metrics'")
            (size,) = conn.execute("PRAGMA page_size").fetchone()
        start = (root[0] - 1) * size
        out[start : start + size] = rng.randbytes(size)
    elif how == "not a database":
        return b"experiment,arm,seed,result\ntoy,baseline,0,0.9\n"
    return bytes(out)


COMMANDS = [
    ["status"], ["status", "toy"], ["report", "toy"], ["report", "toy", "--format", "json"],
    ["plan", "SPEC"], ["run", "SPEC", "--backend", "inline"], ["register", "SPEC"],
    ["diff", "toy", "toy"], ["bundle", "toy", "-o", "out.tar.gz"], ["demo"],
]  # fmt: skip


@pytest.mark.parametrize("how", ["truncated", "random header", "random page", "not a database"])
def test_a_corrupt_sqlite_ledger_is_named_by_every_command(
    how: str,
    good_ledger: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, spec = good_ledger
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAIRTRIAL_STORE", raising=False)
    shutil.copy(spec.parent / "toy.py", tmp_path / "toy.py")
    shutil.copy(spec, tmp_path / "spec.toml")
    broken = _corrupt(good.read_bytes(), how, good)
    db = tmp_path / "ledger.db"
    for args in COMMANDS:
        db.write_bytes(broken)  # afresh: no command may have "repaired" it
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([*(str(tmp_path / "spec.toml") if a == "SPEC" else a for a in args),
                  "--store", str(db)])  # fmt: skip
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (args, err)
        line = _error_line(err)
        assert f"the ledger at sqlite:///{db} is corrupt" in line, (args, line)
        assert db.read_bytes() == broken, f"{args} wrote to a corrupt ledger"


def _unprivileged() -> list[str]:
    """A command prefix that takes away root's power to write read-only files."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only file stays writable")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]


_COMMANDS_SCRIPT = """
import contextlib, io, json, sys
from fairtrial.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def test_a_read_only_sqlite_ledger_is_read_but_not_run(
    good_ledger: tuple[Path, Path], tmp_path: Path
) -> None:
    """A 0444 file in a folder that can be written (SQLite makes the -shm file a reader of a
    WAL ledger needs), and one in a 0555 folder (no -shm can be made): status, report and
    bundle read them; run says they are read-only."""
    good, spec = good_ledger
    prefix = _unprivileged()
    shutil.copy(spec.parent / "toy.py", tmp_path / "toy.py")
    shutil.copy(spec, tmp_path / "spec.toml")
    shelves = [tmp_path / "open-shelf", tmp_path / "closed-shelf"]
    commands = []
    for k, folder in enumerate(shelves):
        folder.mkdir()
        shutil.copy(good, folder / "ledger.db")
        (folder / "ledger.db").chmod(0o444)
        store = ["--store", str(folder / "ledger.db")]
        bundle = ["bundle", "toy", "-o", str(tmp_path / f"{k}.tar.gz"), *store]
        commands += [["status", *store], ["report", "toy", *store], bundle]
        commands.append(["run", "spec.toml", *store])
    shelves[1].chmod(0o555)
    try:
        out = subprocess.run(
            [*prefix, sys.executable, "-c", _COMMANDS_SCRIPT, json.dumps(commands)],
            cwd=tmp_path, env=_env(), text=True, capture_output=True, timeout=180,
        )  # fmt: skip
    finally:
        shelves[1].chmod(0o755)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    for k, folder in enumerate(shelves):
        status, report, bundle, run = results[4 * k : 4 * k + 4]
        assert status["code"] == 0 and "toy" in status["out"] and "4/4" in status["out"], status
        assert report["code"] == 0 and "noisy" in report["out"], report
        assert bundle["code"] == 0 and (tmp_path / f"{k}.tar.gz").is_file(), bundle
        assert run["code"] == 2, run
        line = _error_line(run["err"])
        assert f"the ledger at sqlite:///{folder / 'ledger.db'} is read-only" in line, line
        assert (folder / "ledger.db").read_bytes() == good.read_bytes()


# -- the start-up race ---------------------------------------------------------------------------
def _first_writes(url: str, barrier: threading.Barrier, k: int) -> None:
    """What every run writes first, on the same experiment: the ledger's tables and meta rows,
    the experiment, its compute settings and trials, the code snapshot and provenance."""
    barrier.wait()
    led = Ledger(url)
    try:
        eid = "race0race0ra"
        led.upsert_experiment(
            experiment_id=eid, name="race", spec_hash=eid + "0" * 52, spec={"k": 1},
            arms={"arms": [{"name": "baseline", "kind": "baseline", "components": {}}],
                  "ablations": []},
            spec_path=f"/specs/{k}.toml", task="digits", task_checksum="c" * 64,
            metric="accuracy", direction="max", seeds=2, root_seed=0,
        )  # fmt: skip
        led.set_compute_settings(eid, {"pue": 1.2})
        led.add_trials(
            TrialPlan(f"{eid}/baseline/{i}", eid, "baseline", i, {"lr": 0.1}, {"init": i})
            for i in range(2)
        )
        snapshot = led.put_code_snapshot({"files": {"toy.py": b"print(1)\n"}, "external": {}})
        pid = led.put_provenance({"code": snapshot, "python": "3"})
        led.add_compute(f"{eid}/baseline/0", 1, {"wall_time": 1.0})
        led.add_config_reads(f"{eid}/baseline/0", 1, ["lr"])
        assert led.provenance(pid)["python"] == "3"
    finally:
        led.close()


def test_runs_starting_at_the_same_moment_all_start(store_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def one(k: int) -> None:
        try:
            _first_writes(store_url, barrier, k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors][:3]
    led = Ledger(store_url)
    try:
        (exp,) = led.experiments()
        assert len(led.trials(exp.id)) == 2 and led.compute_settings(exp.id) == {"pue": 1.2}
        with led.engine.connect() as c:
            assert len(c.execute(select(s.code_files)).all()) == 1
            assert len(c.execute(select(s.meta)).all()) == 2
    finally:
        led.close()


def test_cli_runs_starting_at_the_same_moment_all_succeed(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"  # none yet: the runs make it together
    specs = [
        write_spec(_spec(name=f"race{k}", seeds=2).replace("noise = 0.0", f"noise = 0.{k}"),
                   name=f"race{k}.toml")
        for k in range(3)
    ]  # fmt: skip
    procs = [
        subprocess.Popen(_run_cmd(spec, str(db)), cwd=tmp_path, env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for spec in specs
    ]  # fmt: skip
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err
    led = Ledger(db)
    try:
        assert sorted(e.name for e in led.experiments()) == ["race0", "race1", "race2"]
    finally:
        led.close()


# -- a retried write that did commit is not stored twice -----------------------------------------
class _CommitThenFail(sqlite3.Connection):
    """A connection whose next commits succeed but report "database is locked": what a client
    sees when a commit's answer is lost (on PostgreSQL, a connection dropped at COMMIT)."""

    failures = 0

    def commit(self) -> None:
        super().commit()
        if _CommitThenFail.failures:
            _CommitThenFail.failures -= 1
            raise sqlite3.OperationalError("database is locked")


def test_a_retried_write_that_did_commit_is_not_stored_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fairtrial.ledger.engine import _sqlite_pragmas

    monkeypatch.setenv(ENV_WINDOW, "5")
    db = tmp_path / "ledger.db"
    led = Ledger(db)
    led.engine.dispose()
    led.engine = create_engine(
        f"sqlite:///{db}",
        creator=lambda: sqlite3.connect(db, factory=_CommitThenFail, check_same_thread=False),
    )
    event.listen(led.engine, "connect", _sqlite_pragmas)

    def once(write: Callable[[], Any]) -> Any:
        _CommitThenFail.failures = 1
        result = write()
        assert _CommitThenFail.failures == 0, "the fault was not injected"
        return result

    eid = "abc123def456"
    once(lambda: led.upsert_experiment(
        experiment_id=eid, name="exp", spec_hash=eid + "0" * 52, spec={},
        arms={"arms": [], "ablations": []}, spec_path=None, task="digits",
        task_checksum="c" * 64, metric="accuracy", direction="max", seeds=1, root_seed=0,
    ))  # fmt: skip
    tid = f"{eid}/baseline/0"
    once(lambda: led.add_trials([TrialPlan(tid, eid, "baseline", 0, {}, {"init": 0})]))
    once(lambda: led.add_metrics(tid, 1, [(0, 0.5, "loss", 1.0), (1, 0.7, "loss", 0.5)]))
    payload = {"task": "digits", "task_checksum": "c" * 64, "metric": "accuracy", "score": 0.9,
               "n": 2, "predictions_sha256": "p" * 64, "predictions": [1, 0]}  # fmt: skip
    once(lambda: led.add_test_evaluation(tid, 1, eid, payload))
    entry = once(lambda: led.add_preregistration(
        name="exp", experiment_id=eid, spec_hash=eid + "0" * 52, record={"plan": 1}
    ))  # fmt: skip
    once(lambda: led.add_compute(tid, 1, {"wall_time": 1.0}))
    assert len(led.metrics(tid)) == 2
    assert len(led.test_evaluations(eid)) == 1 and len(led.test_log()) == 1
    assert len(led.preregistrations()) == 1 and entry["seq"] == 1
    assert led.check_chain("test_log").ok and led.check_chain("preregistrations").ok
    led.close()
