"""The setup scripts, run for real as on a fresh machine that lacks what they install.

``scripts/chromium.sh``, ``scripts/postgres.sh`` and ``scripts/slurm.sh`` run in a private
mount namespace (``unshare -m``) where ``/usr`` is an overlay on a tmpfs: the tool is deleted
there, and a stub ``apt-get`` first on PATH records its arguments and "installs" the package
by creating its executables in the overlay. The real ``/usr`` is never written and no real
apt-get runs. Where mount namespaces are not permitted (not root, a locked-down container)
those tests skip, and fail under ``CI=true``, which runs as root. ``scripts/setup.sh`` runs in
a copy of the project whose ``.venv`` has a stub Python, so no real pip runs either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534

# Runs "$@" with /usr overlaid on a tmpfs mounted at $1, after deleting each path in $HIDE and
# creating an executable at each path in $PLANT. The overlay check guards the deletions: they
# must never reach the real /usr.
NAMESPACE = r"""
set -euo pipefail
scratch="$1"; shift
mount -t tmpfs fairtrial-test "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay fairtrial-test \
  -o "lowerdir=/usr,upperdir=$scratch/upper,workdir=$scratch/work" /usr
[ "$(findmnt -n -o SOURCE --target /usr)" = fairtrial-test ] || { echo "no overlay" >&2; exit 99; }
for path in ${HIDE:-}; do rm -rf "$path"; done
for path in ${PLANT:-}; do install -D -m 755 /dev/null "$path"; done
exec "$@"
"""

# apt-get as the scripts call it: each call is a line in $APT_LOG; "install" fails when
# $APT_FAIL is set, else creates the executables in $APT_CREATES where the package puts them.
APT_GET = r"""#!/bin/bash
echo "$*" >>"$APT_LOG"
if [ "$1" = install ]; then
  [ -z "${APT_FAIL:-}" ] || { echo "E: Unable to locate package ${*: -1}" >&2; exit 100; }
  for path in $APT_CREATES; do install -D -m 755 /dev/null "$path"; done
fi
"""

CHROMIUMS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
PG_LIB = "/usr/lib/postgresql"
PG_15 = (f"{PG_LIB}/15/bin/initdb", f"{PG_LIB}/15/bin/pg_ctl")
SLURM_BINS = (
    "/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch",
    "/usr/bin/squeue", "/usr/bin/sinfo", "/usr/bin/scontrol", "/usr/bin/scancel",
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One script run: its exit status and output, and each apt-get call's arguments."""

    returncode: int
    stdout: str
    stderr: str
    apt_calls: list[list[str]]

    @property
    def last_error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must test the install scripts: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def scripts() -> Iterator[Path]:
    """A copy of scripts/ that any user can read (the not-root case runs as nobody)."""
    if os.geteuid() != 0:
        _unavailable("needs root: the scripts run in a private mount namespace")
    if shutil.which("unshare") is None:
        _unavailable("no unshare (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="fairtrial-scripts-"))
    try:
        base.chmod(0o755)
        shutil.copytree(SCRIPTS, base / "scripts")
        probe = _in_namespace(base / "probe", ["true"], {})
        if probe.returncode != 0:
            _unavailable(f"no private mount namespace with an overlay: {probe.stderr.strip()}")
        yield base / "scripts"
    finally:
        shutil.rmtree(base)


def _in_namespace(
    scratch: Path, argv: Sequence[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    scratch.mkdir()
    unshare = ["unshare", "-m", "--propagation", "private", "bash", "-c", NAMESPACE, "ns"]
    return subprocess.run(
        [*unshare, str(scratch), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": PATH, "LC_ALL": "C", **env},
    )


def run_script(
    tmp_path: Path,
    argv: Sequence[str],
    *,
    hide: Sequence[str] = (),
    plant: Sequence[str] = (),
    apt: Literal["installs", "fails", "absent"] = "installs",
    creates: Sequence[str] = (),
    as_nobody: bool = False,
) -> Run:
    """Run ``argv`` in the namespace, with the stub apt-get on PATH unless ``apt`` is absent."""
    assert all(p.startswith("/usr/") for p in [*hide, *plant, *creates])
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "apt-get").write_text(APT_GET)
    (stub / "apt-get").chmod(0o755)
    log = tmp_path / "apt.log"
    log.touch()
    env = {"HIDE": " ".join(hide), "PLANT": " ".join(plant), "APT_LOG": str(log)}
    if apt == "absent":
        env["HIDE"] += " /usr/bin/apt-get /usr/sbin/apt-get"
    else:
        env["PATH"] = f"{stub}:{PATH}"
        env["APT_CREATES"] = " ".join(creates)
        if apt == "fails":
            env["APT_FAIL"] = "1"
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    out = _in_namespace(tmp_path / "ns", [*(prefix if as_nobody else []), *argv], env)
    assert out.returncode != 99, out.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    return Run(out.returncode, out.stdout, out.stderr, calls)


def assert_installed(run: Run, package: str) -> None:
    """apt-get refreshed its lists, then installed ``package`` and nothing else."""
    assert [call[0] for call in run.apt_calls] == ["update", "install"], run.apt_calls
    names = package.split()
    assert run.apt_calls[1][-len(names) :] == names and "-y" in run.apt_calls[1], run.apt_calls


def test_chromium_is_installed_when_absent(scripts: Path, tmp_path: Path) -> None:
    run = run_script(
        tmp_path, [str(scripts / "chromium.sh")], hide=CHROMIUMS, creates=CHROMIUMS[:1]
    )
    assert run.returncode == 0, run.stderr
    assert_installed(run, "chromium")
    assert run.stdout == "/usr/bin/chromium\n"


def test_chromium_present_needs_no_apt_get(scripts: Path, tmp_path: Path) -> None:
    run = run_script(tmp_path, [str(scripts / "chromium.sh")], hide=CHROMIUMS, plant=CHROMIUMS[1:])
    assert run.returncode == 0, run.stderr
    assert run.apt_calls == [] and run.stdout == "/usr/bin/chromium-browser\n"


def test_postgres_is_installed_when_absent(scripts: Path, tmp_path: Path) -> None:
    run = run_script(tmp_path, [str(scripts / "postgres.sh"), "bin"], hide=[PG_LIB], creates=PG_15)
    assert run.returncode == 0, run.stderr
    assert_installed(run, "postgresql")
    assert run.stdout == f"{PG_LIB}/15/bin\n"


def test_postgres_present_needs_no_apt_get(scripts: Path, tmp_path: Path) -> None:
    # The newest version wins by version order (16 after 9.6), not by string order.
    plant = [f"{PG_LIB}/9.6/bin/initdb", f"{PG_LIB}/16/bin/initdb"]
    run = run_script(tmp_path, [str(scripts / "postgres.sh"), "bin"], hide=[PG_LIB], plant=plant)
    assert run.returncode == 0, run.stderr
    assert run.apt_calls == [] and run.stdout == f"{PG_LIB}/16/bin\n"


def test_postgres_stop_without_server_binaries_still_cleans_up(
    scripts: Path, tmp_path: Path
) -> None:
    pgdir = tmp_path / "pg"
    (pgdir / "data").mkdir(parents=True)
    run = run_script(tmp_path, [str(scripts / "postgres.sh"), "stop", str(pgdir)], hide=[PG_LIB])
    assert run.returncode == 0, run.stderr
    assert not pgdir.exists() and run.apt_calls == []


def test_slurm_is_installed_when_absent(scripts: Path, tmp_path: Path) -> None:
    # The stub install creates empty executables: the script goes on past the install and
    # stops, in one line, where the empty slurmd cannot describe the node.
    argv = [str(scripts / "slurm.sh"), "start", str(tmp_path / "cluster")]
    run = run_script(tmp_path, argv, hide=SLURM_BINS, creates=SLURM_BINS)
    assert_installed(run, "slurm-wlm munge")
    assert run.returncode != 0 and run.stdout == ""
    assert (
        run.last_error_line
        == "scripts/slurm.sh: slurmd -C did not describe this node (it printed '')"
    )


def test_slurm_stop_without_its_binaries_still_cleans_up(scripts: Path, tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"
    (cluster / "state").mkdir(parents=True)
    argv = [str(scripts / "slurm.sh"), "stop", str(cluster)]
    run = run_script(tmp_path, argv, hide=SLURM_BINS)
    assert run.returncode == 0, run.stderr
    assert not cluster.exists() and run.apt_calls == []


CASES = {
    "chromium": (["chromium.sh"], CHROMIUMS, "chromium"),
    "postgres": (["postgres.sh", "start", "{tmp}/pg"], [PG_LIB], "postgresql"),
    "slurm": (["slurm.sh", "start", "{tmp}/pg"], SLURM_BINS, "slurm-wlm munge"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failed_install_says_so_in_one_line(scripts: Path, tmp_path: Path, case: str) -> None:
    script, hide, package = CASES[case]
    argv = [str(scripts / script[0]), *(a.format(tmp=tmp_path) for a in script[1:])]
    run = run_script(tmp_path, argv, hide=hide, apt="fails")
    assert run.returncode != 0 and run.stdout == ""
    assert_installed(run, package)  # it got as far as trying
    assert run.last_error_line == f"cannot install {package}: apt-get install failed"
    assert not (tmp_path / "pg").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_apt_get_says_so_in_one_line(scripts: Path, tmp_path: Path, case: str) -> None:
    script, hide, package = CASES[case]
    argv = [str(scripts / script[0]), *(a.format(tmp=tmp_path) for a in script[1:])]
    run = run_script(tmp_path, argv, hide=hide, apt="absent")
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr == f"cannot install {package}: no apt-get on this machine\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_not_root_says_so_in_one_line(scripts: Path, tmp_path: Path, case: str) -> None:
    script, hide, package = CASES[case]
    # nobody cannot write tmp_path; the script must stop before it would create anything
    argv = [str(scripts / script[0]), *(a.format(tmp="/nonexistent") for a in script[1:])]
    run = run_script(tmp_path, argv, hide=hide, as_nobody=True)
    assert run.returncode != 0 and run.stdout == ""
    assert run.apt_calls == []
    assert run.stderr == f"cannot install {package}: apt-get needs root (run this as root)\n"


# .venv/bin/python for setup.sh: each call is a line in $PY_LOG; pip's install of the project
# fails when $PIP_FAIL is set, as it does when an extra's package cannot be resolved.
FAKE_PYTHON = r"""#!/bin/bash
echo "$*" >>"$PY_LOG"
if [[ -n "${PIP_FAIL:-}" && "$*" == *" -e "* ]]; then
  echo "ERROR: No matching distribution found for torch==2.13.0" >&2; exit 1
fi
"""


@pytest.mark.parametrize("pip_fails", [False, True])
def test_setup_stops_when_pip_fails(tmp_path: Path, pip_fails: bool) -> None:
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    for name in ("scripts/setup.sh", "scripts/constraints.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    python = clone / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "python.log"
    env = {
        "PATH": os.environ["PATH"],
        "PY_LOG": str(log),
        **({"PIP_FAIL": "1"} if pip_fails else {}),
    }
    out = subprocess.run(
        ["bash", str(clone / "scripts" / "setup.sh"), "sklearn"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    stamp = clone / ".venv" / ".fairtrial-installed-sklearn"
    installs = [line for line in log.read_text().splitlines() if " -e " in line]
    assert installs == [
        "-m pip install --quiet --disable-pip-version-check "
        "-c scripts/constraints.txt -e .[sklearn]"
    ], installs
    if pip_fails:
        assert out.returncode != 0 and not stamp.exists(), out.stdout
        assert "No matching distribution found for torch" in out.stdout
        assert (
            out.stderr
            == "pip could not install fairtrial[sklearn] into .venv (its error is above)\n"
        )
    else:
        assert out.returncode == 0 and stamp.exists(), out.stderr
