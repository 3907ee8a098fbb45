"""Cost verdicts and speed trials end to end: real training on a built-in task, each trial's
own time compared paired by seed, and the metric as the guard of a ``faster`` verdict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fairtrial.analysis.document import analyze, build
from fairtrial.backends import InlineBackend, choose_backend
from fairtrial.bundle import read_bundle, write_bundle
from fairtrial.errors import SpecError
from fairtrial.ledger import Ledger
from fairtrial.record import ExperimentRecord
from fairtrial.report import render_md
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

# half the epochs reach the same accuracy on digits; one epoch at a tiny learning rate does not
SPEED = """
[experiment]
name = "digits-speed"
task = "digits"
recipe = "mlp"
seeds = 8
primary = "train_time"

[hypothesis]
claim = "half the epochs reach the same accuracy in half the time"
smallest_effect = 0.02

[baseline]
hidden = 32
lr = 0.01
epochs = 16
batch_size = 64

[arms.half]
epochs = 8

[arms.rushed]
epochs = 1
lr = 0.0003
"""


@pytest.fixture(scope="module")
def speed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, str, Path]:
    root = tmp_path_factory.mktemp("speed")
    path = root / "spec.toml"
    path.write_text(SPEED)
    spec = load_spec(path)
    led = Ledger(root / "ledger.db")
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    return led, spec.experiment_id, root


def test_half_the_epochs_is_faster_and_the_rushed_arm_is_not(
    speed: tuple[Ledger, str, Path],
) -> None:
    led, exp_id, _ = speed
    doc = analyze(led, led.experiment(exp_id))
    half, rushed = doc.comparison("half"), doc.comparison("rushed")
    assert half.primary == "train_time" and half.guard is not None
    cv = (half.costs or {})["train_time"]
    assert cv.ratio is not None and 0.35 < cv.ratio < 0.65, cv
    assert cv.interval is not None and cv.interval[1] < 1
    assert half.guard.non_inferior, half.guard
    assert half.verdict == "faster", half.reason
    # faster, but clearly less accurate: not "faster"
    assert (rushed.costs or {})["train_time"].verdict == "faster"
    assert rushed.guard is not None and rushed.guard.metric_verdict == "worse"
    assert rushed.verdict == "worse", rushed.reason
    # FLOPs of a fixed model per epoch: an exact ratio, no test
    flops = (half.costs or {}).get("flops")
    if flops is not None:
        # evaluation adds a little
        assert flops.exact and flops.p is None and 0.5 <= flops.ratio < 0.55
    # one line: what it gained, for what it cost
    md = render_md(doc)
    assert "### Speed trial" in md and "What it gained, for what it cost" in md
    assert "the train time [" in md
    # the speed trial ran 3 baseline trials twice: the timing noise between them is stated,
    # (on a busy machine it may be large, but it is measured)
    noise = doc.compute.timing_noise
    assert noise is not None and noise["n_groups"] == 3 and noise["spread"] >= 0, noise
    assert "Timing noise between repeated identical trials" in md
    assert cv.noise == noise["spread"]
    assert "speed trial" in doc.settings["primary"]
    assert doc.method["primary"]["outcome"] == "train_time"


def test_the_bundle_carries_the_costs_and_rebuilds_the_same_verdicts(
    speed: tuple[Ledger, str, Path],
) -> None:
    led, exp_id, root = speed
    exp = led.experiment(exp_id)
    doc = analyze(led, exp)
    path = root / "speed.tar.gz"
    write_bundle(led, exp, path)
    with read_bundle(path) as b:
        trials = b.trials()
        costs = b.costs(trials)
        again = build(ExperimentRecord.from_row(b.experiment()), trials, costs=costs)
    assert again.verdicts == doc.verdicts
    assert (again.comparison("half").costs or {})["train_time"].ratio == pytest.approx(
        (doc.comparison("half").costs or {})["train_time"].ratio
    )


def test_speed_trial_spec_errors_and_backend(write_spec: Callable[..., Path]) -> None:
    def error(body: str) -> str:
        with pytest.raises(SpecError) as info:
            load_spec(write_spec(body))
        return str(info.value)

    no_margin = SPEED.replace("smallest_effect = 0.02", "")
    assert "set smallest_effect, how much worse the metric may be" in error(no_margin)
    ttt = SPEED.replace('primary = "train_time"', 'primary = "time_to_target"')
    assert "needs target = the value of the watched metric" in error(ttt)
    bad = SPEED.replace('primary = "train_time"', 'primary = "speed"')
    assert '"metric" (default), "train_time" or "time_to_target"' in error(bad)
    spec = load_spec(write_spec(SPEED))
    backend, why = choose_backend(spec)
    assert backend.name == "local" and "speed trial" in why


def test_a_first_trial_and_batched_members_are_left_out_of_time_comparisons() -> None:
    """The mechanism behind every time ratio: a process's first trial (one-time costs) and a
    batched model's members (a shared time) never enter a time comparison; FLOPs, which
    neither distorts, still compare every seed."""
    from fairtrial.analysis.costs import cost_verdicts
    from fairtrial.record import Hypothesis
    from fairtrial.results import Comparison

    def rec(t: float, **marks: object) -> dict[str, object]:
        return {"train_time": t, "flops": 2e9, **marks}

    base = {s: rec(1.0 + 0.01 * s) for s in range(8)}
    arm = {s: rec(0.5 + 0.01 * s, flops=1e9) for s in range(8)}
    base[0] = rec(9.0, first_in_process=True)  # a cold start: 9x its warm time
    arm[1] = rec(0.5, flops=1e9, batched=4)
    arm[2] = rec(0.5, flops=1e9, worker_startup={"seconds": 3.0})
    c = Comparison(arm="half", against="baseline", family="arms vs baseline")
    [found] = cost_verdicts({"baseline": base, "half": arm}, [c], Hypothesis())
    t = found["train_time"]
    assert t.n_pairs == 5 and t.missing == 3
    assert t.ratio is not None and 0.45 < t.ratio < 0.55  # the cold 9 s would pull it to ~0.4
    assert found["flops"].n_pairs == 8 and found["flops"].exact and found["flops"].ratio == 0.5
