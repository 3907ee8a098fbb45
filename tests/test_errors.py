"""Install hints that work where they are printed (#12).

From a clone the hint installs the clone (``pip install -e '.[X]'``, or its path from elsewhere),
from an installed package the distribution (``pip install 'fairtrial[X]'``); its pip is the
running environment's. These tests run from this clone, so the clone's hint is the real case;
the installed one is shown the module's file as it lies in site-packages.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fairtrial.errors import MissingDependency, install_hint

ROOT = Path(__file__).resolve().parent.parent
IN_VENV = sys.prefix != sys.base_prefix


def assert_pip_of_this_environment(pip: list[str], env: dict[str, str] | None = None) -> None:
    """The hint's pip, run for real, installs into the running environment's site-packages."""
    out = subprocess.run(
        [*pip, "--version"], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    assert sysconfig.get_path("purelib") in out.stdout, out.stdout


@pytest.fixture
def not_activated(monkeypatch: pytest.MonkeyPatch) -> None:
    """As when ``.venv/bin/fairtrial`` runs without the environment being activated."""
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)


@pytest.mark.usefixtures("not_activated")
def test_in_the_clone_root_the_hint_installs_the_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    *pip, install, editable, target = shlex.split(install_hint("server"))
    assert [install, editable, target] == ["install", "-e", ".[server]"]
    assert_pip_of_this_environment(pip)
    if IN_VENV and Path(sys.prefix).parent == ROOT:  # the project's own .venv
        assert pip == [".venv/bin/pip"]


@pytest.mark.usefixtures("not_activated")
def test_elsewhere_the_hint_names_the_clone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    *pip, install, editable, target = shlex.split(install_hint("server"))
    assert [install, editable, target] == ["install", "-e", f"{ROOT}[server]"]
    assert_pip_of_this_environment(pip)


def test_for_an_installed_package_the_hint_names_the_distribution(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    *_, install, target = shlex.split(install_hint("ray", site / "fairtrial" / "errors.py"))
    assert [install, target] == ["install", "fairtrial[ray]"]


@pytest.mark.skipif(not IN_VENV, reason="needs a virtual environment")
def test_in_the_activated_environment_pip_is_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    pip, *_ = shlex.split(install_hint("server"))
    assert pip == "pip"
    path = f"{sysconfig.get_path('scripts')}{os.pathsep}{os.environ['PATH']}"
    assert_pip_of_this_environment([pip], {**os.environ, "PATH": path})


def test_missing_dependency_gives_the_hint() -> None:
    message = str(MissingDependency("fastapi", "server", "fairtrial serve"))
    assert message == f"fairtrial serve needs the 'fastapi' package: {install_hint('server')}"


def test_the_cli_prints_the_hint_in_one_line(tmp_path: Path) -> None:
    # fastapi made unimportable, in a real process started outside the clone
    code = "import sys; sys.modules['fastapi'] = None; from fairtrial.cli import main; main()"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PYTHONPATH"] = str(ROOT / "src")
    out = subprocess.run(
        [sys.executable, "-c", code, "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2 and out.stdout == "", out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, out.stderr
    assert line.endswith(f"install -e {shlex.quote(f'{ROOT}[server]')}"), line
