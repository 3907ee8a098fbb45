"""Runs started from a script or a notebook: what spawned workers can and cannot import.

Each test runs real Python code in a subprocess (a script file, or code without a file as a
notebook has), with the local backend's real worker processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fairtrial
from fairtrial.ledger import Ledger

SPEC = """
[experiment]
name = "script"
task = "digits"
recipe = "{recipe}"
seeds = 2

[baseline]
scale = 1.0
"""

RECIPE = """
import numpy as np


def train(config, ctx):
    ctx.log(step=0, scale=config["scale"])
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int))
"""

HEADER = """from pathlib import Path

import fairtrial

"""

RUN = """HERE = Path({here!r})
spec = fairtrial.load_spec(HERE / "spec.toml")
ledger = fairtrial.Ledger(HERE / "ledger.db")
summary = fairtrial.run_experiment(
    spec, ledger, fairtrial.LocalBackend(workers=1), show_progress=False, max_retries=0
)
print("finished", summary.finished, "failed", summary.failed)
"""


def _guarded(tmp_path: Path) -> str:
    return 'if __name__ == "__main__":\n' + textwrap.indent(RUN.format(here=str(tmp_path)), "    ")


def _python(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    src = str(Path(fairtrial.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _setup(tmp_path: Path, recipe: str = "my_recipe:train") -> None:
    (tmp_path / "my_recipe.py").write_text(textwrap.dedent(RECIPE))
    (tmp_path / "spec.toml").write_text(SPEC.format(recipe=recipe))


def _statuses(tmp_path: Path) -> list[str]:
    led = Ledger(tmp_path / "ledger.db")
    try:
        return sorted(t.status for e in led.experiments() for t in led.trials(e.id))
    finally:
        led.close()


def test_a_script_without_the_main_guard_stops_before_any_trial(tmp_path: Path) -> None:
    _setup(tmp_path)
    script = tmp_path / "unguarded.py"
    script.write_text(HEADER + RUN.format(here=str(tmp_path)))
    line = HEADER.count("\n") + 4  # the run_experiment call
    out = _python([str(script)], tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("fairtrial.errors.BackendError: ")
    assert f"{script}:{line} starts the run at the top level of the script" in last
    assert 'under `if __name__ == "__main__":`' in last
    assert "finished" not in out.stdout
    assert _statuses(tmp_path) == ["pending", "pending"]  # no trial claimed, none lost


def test_the_same_script_with_the_main_guard_runs(tmp_path: Path) -> None:
    _setup(tmp_path)
    script = tmp_path / "guarded.py"
    script.write_text(HEADER + _guarded(tmp_path))
    out = _python([str(script)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "finished 2 failed 0"


def test_a_worker_that_dies_while_starting_stops_the_run_with_the_reason(
    tmp_path: Path,
) -> None:
    _setup(tmp_path)
    script = tmp_path / "dies.py"
    # the main guard is there, but a worker cannot import the script again
    dies = 'import sys\nif __name__ == "__mp_main__":\n    sys.exit(3)\n'
    script.write_text(HEADER + dies + _guarded(tmp_path))
    out = _python([str(script)], tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("fairtrial.errors.BackendError: a worker process died while starting")
    assert "(worker exited with status 3)" in last and str(script) in last
    assert "finished" not in out.stdout
    # the trial handed to that worker is interrupted (a later run resumes it), not failed
    assert _statuses(tmp_path) == ["interrupted", "pending"]


NOTEBOOK = """
import numpy as np
from pathlib import Path

import fairtrial


def train(config, ctx):  # a recipe defined in a notebook cell: it lives in module __main__
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int))


HERE = Path({here!r})
spec = fairtrial.parse_spec((HERE / "spec.toml").read_text())
ledger = fairtrial.Ledger(HERE / "ledger.db")
try:
    fairtrial.run_experiment(spec, ledger, fairtrial.LocalBackend(workers=1), show_progress=False)
except fairtrial.FairtrialError as exc:
    print("error:", exc)
summary = fairtrial.run_experiment(spec, ledger, fairtrial.InlineBackend(), show_progress=False)
print("inline finished", summary.finished)
"""


def test_a_notebook_recipe_under_the_local_backend_says_what_to_do(tmp_path: Path) -> None:
    _setup(tmp_path, recipe="__main__:train")
    out = _python(["-c", NOTEBOOK.format(here=str(tmp_path))], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(
        "error: recipe '__main__:train' is defined in module __main__ (a notebook"
    )
    assert "put it in a module file next to the spec" in lines[0]
    assert "InlineBackend() (`--backend inline`)" in lines[0]
    assert lines[1] == "inline finished 2"
