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
