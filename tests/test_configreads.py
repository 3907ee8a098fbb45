"""Config keys no trial read: recorded per trial, warned about by the run, said by the report."""

from __future__ import annotations

import copy
import io
import json
import pickle
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from fairtrial import report
from fairtrial.analysis.document import analyze
from fairtrial.backends import InlineBackend, LocalBackend
from fairtrial.configreads import ReadRecorder, command_reads, unread_config
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

# A recipe without a config class: it reads `epochs` (default 5), never `epoch`, and reads the
# nested `optimizer.lr` but not `optimizer.momentum`.
RECIPE = """
import numpy as np


def train(config, ctx):
    epochs = config.get("epochs", 5)
    lr = config["optimizer"]["lr"]
    if "noise" in config:
        pass
    ctx.log(step=epochs, lr=lr)
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int))
"""

SPEC = """
[experiment]
name = "typo"
task = "digits"
recipe = "typo_recipe:train"
seeds = 2

[baseline]
epoch = 3
noise = 0.0
optimizer = {lr = 0.1, momentum = 0.9}

[arms.noisy]
noise = 0.5
"""


def _spec(tmp_path: Path, body: str = SPEC) -> Path:
    (tmp_path / "typo_recipe.py").write_text(textwrap.dedent(RECIPE))
    path = tmp_path / "spec.toml"
    path.write_text(body)
    return path


def test_the_recorder_counts_reads_by_dotted_key_and_stays_a_dict() -> None:
    def reads(action: object) -> set[str]:
        c = ReadRecorder({"a": 1, "b": 2, "opt": {"lr": 0.1, "m": 0.9}})
        action(c)  # type: ignore[operator]
        return c.reads

    assert reads(lambda c: c["a"]) == {"a"}
    assert reads(lambda c: c.get("missing", 3)) == {"missing"}
    assert reads(lambda c: "b" in c) == {"b"}
    assert reads(lambda c: c["opt"]["lr"]) == {"opt", "opt.lr"}
    assert reads(lambda c: list(c)) == {"a", "b", "opt"}
    assert reads(lambda c: dict(c["opt"].items())) == {"opt", "opt.lr", "opt.m"}
    assert reads(lambda c: (lambda **kw: kw)(**c["opt"])) == {"opt", "opt.lr", "opt.m"}
    assert reads(lambda c: copy.deepcopy(c)["b"]) == {"b"}  # copies record into the same set
    assert reads(lambda c: repr(c) + str(c == {})) == set()
    c = ReadRecorder({"a": 1, "opt": {"lr": 0.1}})
    assert isinstance(c, dict) and c == {"a": 1, "opt": {"lr": 0.1}}
    assert json.loads(json.dumps(c)) == {"a": 1, "opt": {"lr": 0.1}}
    back = pickle.loads(pickle.dumps(c))
    assert type(back) is dict and back == {"a": 1, "opt": {"lr": 0.1}}
    assert type(back["opt"]) is dict


def test_command_reads_are_its_placeholders() -> None:
    command = "{python} t.py --lr {lr} --m {opt.m} {{literal}} --seed {seed}"
    assert command_reads(command) == ["lr", "opt.m"]


def test_unread_config_names_keys_arms_and_a_close_match() -> None:
    found = unread_config(
        [
            ("baseline", {"epoch": 3, "lr": 0.1}, ["epochs", "lr"]),
            ("fast", {"epoch": 3, "lr": 0.5}, ["epochs", "lr"]),
        ]
    )
    assert found == {
        "unread": {"epoch": ["baseline", "fast"]},
        "read": ["epochs", "lr"],
        "suggest": {"epoch": "epochs"},
    }
    assert unread_config([("baseline", {"lr": 0.1}, ["lr"])]) is None


def test_a_run_warns_once_about_a_key_no_trial_read_and_the_report_says_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec(_spec(tmp_path))
    led = Ledger(tmp_path / "ledger.db")
    out = io.StringIO()
    console = Console(file=out, width=400, color_system=None)
    summary = run_experiment(
        spec, led, LocalBackend(workers=1), console=console, show_progress=False
    )
    assert summary.finished == 4
    reads = led.config_reads(spec.experiment_id)
    assert len(reads) == 4
    assert all(r == ["epochs", "noise", "optimizer", "optimizer.lr"] for r in reads.values())
    # (the recipe predicts zeros whatever the seed: other warnings say so; this is about keys)
    warnings = [line for line in out.getvalue().splitlines() if "config key" in line]
    assert len(warnings) == 1, out.getvalue()
    line = warnings[0]
    assert "'epoch' (baseline, noisy; did you mean 'epochs'?)" in line
    assert "'optimizer.momentum' (baseline, noisy)" in line
    assert "keys read: epochs, noise, optimizer.lr" in line

    analysis = analyze(led, led.experiment(spec.experiment_id))
    doc = analysis.to_dict()
    assert doc["config_reads"]["unread"] == {
        "epoch": ["baseline", "noisy"],
        "optimizer.momentum": ["baseline", "noisy"],
    }
    text = io.StringIO()
    Console(file=text, width=400, color_system=None).print(report.render_text(analysis))
    assert "Warning: config keys 'epoch' (baseline, noisy; did you mean 'epochs'?)" in (
        text.getvalue()
    )
    assert "did you mean 'epochs'?" in report.render_md(analysis)
    led.close()


def test_every_key_read_gives_no_warning_and_a_config_class_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    body = SPEC.replace("epoch = 3", "epochs = 3").replace(", momentum = 0.9", "")
    spec = load_spec(_spec(tmp_path, body))
    led = Ledger(tmp_path / "ledger.db")
    out = io.StringIO()
    run_experiment(spec, led, InlineBackend(), console=Console(file=out), show_progress=False)
    assert "config key" not in out.getvalue()
    assert analyze(led, led.experiment(spec.experiment_id)).config_reads is None

    builtin = """
    [experiment]
    name = "lr"
    task = "digits"
    recipe = "logistic"
    seeds = 2

    [baseline]
    C = 1.0
    """
    spec = load_spec(_spec(tmp_path, textwrap.dedent(builtin)))
    run_experiment(spec, led, InlineBackend(), console=Console(file=out), show_progress=False)
    assert led.config_reads(spec.experiment_id) == {}
    led.close()


def test_a_command_reads_the_keys_its_placeholders_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "cmd.py"
    script.write_text(
        "import os\n"
        "x = os.path.join(os.environ['FAIRTRIAL_DATA_DIR'], 'x_test.csv')\n"
        "open(os.environ['FAIRTRIAL_PREDICTIONS'], 'w').write('0\\n' * len(open(x).readlines()))\n"
    )
    body = f"""
    [experiment]
    name = "cmd-typo"
    task = "digits"
    command = "{sys.executable} cmd.py --lr {{lr}}"
    seeds = 2

    [baseline]
    lr = 0.1
    batchsize = 32
    """
    path = tmp_path / "cmd.toml"
    path.write_text(textwrap.dedent(body))
    spec = load_spec(path)
    led = Ledger(tmp_path / "ledger.db")
    out = io.StringIO()
    console = Console(file=out, width=400, color_system=None)
    summary = run_experiment(spec, led, InlineBackend(), console=console, show_progress=False)
    assert summary.finished == 2
    assert "config key 'batchsize' (baseline): no {placeholder} of the command uses it" in (
        out.getvalue()
    )
    assert "placeholders used: lr" in out.getvalue()
    led.close()
