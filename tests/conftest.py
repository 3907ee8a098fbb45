"""Shared fixtures: real SQLite and PostgreSQL ledgers, spec files, the toy recipes."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fairtrial.ledger import Ledger

TESTS = Path(__file__).parent
RECIPES = TESTS / "recipes"
PG_URL = os.environ.get("FAIRTRIAL_TEST_POSTGRES")


def _postgres_database() -> Iterator[str]:
    """A fresh database on the test server for one test, dropped afterwards."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must test PostgreSQL: FAIRTRIAL_TEST_POSTGRES is not set")
        pytest.skip("no PostgreSQL server (scripts/test.sh starts one when it can)")
    import psycopg

    name = f"ft_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
    else:
        yield from _postgres_database()


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    led = Ledger(store_url)
    yield led
    led.close()


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec file next to a copy of the toy recipes; returns its path."""

    def write(body: str, name: str = "spec.toml") -> Path:
        for src in RECIPES.glob("*.py"):
            (tmp_path / src.name).write_text(src.read_text())
        path = tmp_path / name
        path.write_text(textwrap.dedent(body).replace("{python}", sys.executable))
        return path

    return write


def toy_spec(name: str = "toy", seeds: int = 3, arms: str = "", extra: str = "") -> str:
    """A spec on digits with the probe recipe; ``arms`` adds [arms.*] tables."""
    return f"""
    [experiment]
    name = "{name}"
    task = "digits"
    recipe = "toy:probe"
    seeds = {seeds}
    {extra}

    [baseline]
    noise = 0.0
    mode = "ok"
    sleep = 0.0

    {textwrap.dedent(arms)}
    """


# -- the registry: real bundles from real runs, a real server on loopback ------------------------
REGISTRY_SPEC = """
[experiment]
name = '{name}'
task = 'digits'
recipe = 'mlp'
seeds = 3
[hypothesis]
claim = '{claim}'
smallest_effect = 0.005
[baseline]
hidden = 16
depth = 1
epochs = 2
lr = 0.01
norm = 'none'
[arms.{arm}]
{change}
"""


@pytest.fixture(scope="session")
def registry_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles of two real digits experiments (MLP, 2 arms × 3 seeds, inline backend) and a
    real replication record of the first: {"layernorm", "lr", "record"} -> path."""
    pytest.importorskip("torch")
    from fairtrial.backends import InlineBackend
    from fairtrial.bundle import write_bundle
    from fairtrial.replicate import replicate
    from fairtrial.runner import run_experiment
    from fairtrial.spec import load_spec

    root = tmp_path_factory.mktemp("registry-bundles")
    led = Ledger(root / "ledger.db")
    out: dict[str, Path] = {}
    for name, arm, change, claim in [
        ("layernorm", "layernorm", "norm = 'layer'", "layer norm helps a small MLP"),
        ("lr", "slow", "lr = 0.002", "a smaller learning rate helps"),
    ]:
        spec_path = root / f"{name}.toml"
        spec_path.write_text(
            REGISTRY_SPEC.format(name=f"digits-{name}", arm=arm, change=change, claim=claim)
        )
        spec = load_spec(spec_path)
        run_experiment(spec, led, InlineBackend(), show_progress=False)
        out[name] = root / f"{name}.tar.gz"
        write_bundle(led, led.experiment(spec.experiment_id), out[name])
    led.close()
    record = replicate(
        out["layernorm"],
        store=root / "replications.db",
        folder=root / "replication",
        backend=InlineBackend(),
        show_progress=False,
    )
    out["record"] = root / "record.json"
    out["record"].write_text(__import__("json").dumps(record))
    return out


class RegistryServer:
    """`fairtrial serve` in a subprocess on a free loopback port, with one write token."""

    def __init__(self, store: str, workdir: Path) -> None:
        import socket
        import subprocess
        import time
        import urllib.request

        from fairtrial.server import Registry

        reg = Registry(store)
        self.token = reg.create_token("tests")
        reg.close()
        self.store = store
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRTRIAL_")}
        self.log = open(workdir / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fairtrial.cli", "serve", "--store", store,
             "--port", str(self.port), "--max-upload-mb", "8"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/api", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "fairtrial serve did not start: " + (workdir / "serve.log").read_text()
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
        self.log.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryServer]:
    """A real registry server, once on SQLite and once on PostgreSQL, empty but for a token."""
    if request.param == "sqlite":
        stores: Iterator[str] = iter([str(tmp_path / "registry.db")])
    else:
        stores = _postgres_database()
    store = next(stores)
    server = RegistryServer(store, tmp_path)
    try:
        yield server
    finally:
        server.stop()
        for _ in stores:  # drops the PostgreSQL database
            pass
