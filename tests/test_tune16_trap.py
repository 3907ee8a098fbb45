"""The trap fair tuning exists to catch, on a real MLP on digits: "proposed" differs from the
baseline by a better learning rate and a component that changes next to nothing. At the spec
values it is `better`; after equal tuning over the learning rate it must not be."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fairtrial import api
from fairtrial.ledger import Ledger

pytest.importorskip("optuna")
pytest.importorskip("torch")

TRAP = """
[experiment]
name = "trap"
task = "digits"
recipe = "mlp"
seeds = 6

[hypothesis]
smallest_effect = 0.01

[baseline]
optimizer = "sgd"
epochs = 3
lr = 0.003
momentum = 0.9

[arms.proposed]
lr = 0.1
momentum = 0.9001

[tuning]
budget = 6
objective = "val_accuracy"

[tuning.space]
lr = { low = 1e-3, high = 0.5, log = true }
"""


def test_a_gain_from_tuning_is_caught(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "trap.toml"
    spec.write_text(TRAP)
    led = Ledger(tmp_path / "ledger.db")
    out = io.StringIO()
    summary = api.run(spec, led, also_untuned=True, console=Console(file=out, width=200))
    assert summary.complete and summary.untuned is not None
    # the tuning round (2 arms x 6 learning rates, momentum differing too: both are options
    # the MLP's batched form takes per member) trained as one batched model
    assert "vectorized: 12 trials as 1 group(s) of 12" in capfd.readouterr().err
    doc = api.analyze("trap", led)
    assert doc.tuning is not None
    (untuned,) = doc.tuning.untuned
    assert untuned.verdict == "better" and untuned.effect is not None and untuned.effect > 0.2
    tuned = doc.comparison("proposed")
    assert tuned.verdict in ("equivalent", "inconclusive"), tuned.reason
    # both arms were tuned over the same configurations and the spec's lr was a starting point
    base, prop = doc.tuning.arms["baseline"], doc.tuning.arms["proposed"]
    assert [c.params for c in base.trials] == [c.params for c in prop.trials]
    assert prop.starting_points == {"lr": 0.1}
    assert base.best is not None and prop.best is not None
    # the sealed test log: the compared and the untuned trials, never a tuning trial
    tuning_ids = {r.id for r, _ in led.stage_trials(doc.experiment.id, "tuning")}
    scored = {e["trial_id"] for e in led.test_evaluations(doc.experiment.id)}
    assert len(scored) == 24 and not scored & tuning_ids
    led.close()
