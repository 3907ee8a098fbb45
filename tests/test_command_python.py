"""Command recipes get the interpreter running fairtrial, not the first python3 on PATH."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from fairtrial.backends import InlineBackend
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

# numpy is installed where fairtrial runs; the fake python3 below has nothing
SCRIPT = """
import os
import sys

import numpy as np

x = np.load(os.path.join(os.environ["FAIRTRIAL_DATA_DIR"], "x_test.npy"))
np.savetxt(os.environ["FAIRTRIAL_PREDICTIONS"], np.zeros(len(x), dtype=int), fmt="%d")
print('{"step": 1, "same_python": %d}' % (sys.executable == os.environ["EXPECTED_PYTHON"]))
"""


@pytest.mark.parametrize(
    "command",
    [
        "python3 script.py",  # the command's program
        "python script.py",
        "{python} script.py",  # the placeholder
        "sh -c 'python3 script.py'",  # a program the command starts finds it on PATH
    ],
)
def test_python_in_a_command_is_the_interpreter_running_fairtrial(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for name in ("python", "python3"):
        (fake / name).write_text("#!/bin/sh\necho 'not the right python' >&2\nexit 7\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPECTED_PYTHON", sys.executable)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "spec.toml").write_text(
        textwrap.dedent(
            f"""
            [experiment]
            name = "which-python"
            task = "digits"
            command = "{command}"
            seeds = 2

            [baseline]
            unused = 1
            """
        )
    )
    spec = load_spec(tmp_path / "spec.toml")
    led = Ledger(tmp_path / "ledger.db")
    summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    trials = led.trials(spec.experiment_id)
    assert summary.finished == 2, [t.error for t in trials]
    for t in trials:
        assert [(m[3], m[4]) for m in led.metrics(t.id)] == [("same_python", 1.0)]
    led.close()


def test_an_unknown_placeholder_lists_python_among_the_valid_ones(tmp_path: Path) -> None:
    from fairtrial.errors import SpecError

    (tmp_path / "spec.toml").write_text(
        '[experiment]\nname = "x"\ntask = "digits"\ncommand = "{pyton} t.py"\nseeds = 2\n'
        "[baseline]\nlr = 0.1\n"
    )
    with pytest.raises(SpecError, match=r"unknown placeholder \{pyton\}; valid: .*python"):
        load_spec(tmp_path / "spec.toml")
