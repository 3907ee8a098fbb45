"""Vectorized seeds: N seeds of one arm as one batched model give what N lone runs give.

Weights within 1e-5 of the sequential run's, test predictions identical, seed i's outcome
independent of which seeds train beside it, and a ledger that reads as after a local run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fairtrial.backends import InlineBackend, make_backend  # noqa: E402
from fairtrial.backends.vectorized import SeedContext, VectorizedBackend  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.ledger import Ledger  # noqa: E402
from fairtrial.recipes import NotVectorizable, build_config, mlp  # noqa: E402
from fairtrial.recipes.torchkit import init_model, predictor  # noqa: E402
from fairtrial.runner import run_experiment  # noqa: E402
from fairtrial.spec import load_spec  # noqa: E402
from fairtrial.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.torch


def _ctx(task: Any, seed: int, cls: type = TrialContext) -> Any:
    return cls(config={}, seed=seed, root_seed=0, task=task, emit=lambda kind, payload: None)


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("task_name", "options", "seeds"),
    [
        ("digits", {}, [0, 1, 2, 3]),  # the defaults: 20 epochs of Adam
        ("digits", {"optimizer": "sgd", "norm": "layer", "select": "best_val"}, [0, 1, 2]),
        ("mnist1d", {"epochs": 8, "hidden": 64, "schedule": "cosine"}, [0, 1, 2]),
    ],
)
def test_weights_and_predictions_match_the_sequential_runs(
    task_name: str, options: dict[str, Any], seeds: list[int]
) -> None:
    task = get_task(task_name)
    d = task.data()
    cfg = build_config(mlp.Config, options)
    to_tensor, (x_tr, y_tr, x_va, y_va) = mlp._inputs(cfg, d)

    def make() -> Any:
        return mlp.MLP(x_tr.shape[1], d.n_classes, cfg)

    lone = []
    for s in seeds:
        ctx = _ctx(task, s)
        model = init_model(ctx, make)
        mlp.fit(cfg, ctx, model, (x_tr, y_tr), (x_va, y_va))
        lone.append(model)
    ctxs = [_ctx(task, s, SeedContext) for s in seeds]
    together = mlp.fit_many(
        [cfg] * len(ctxs), ctxs, [init_model(c, make) for c in ctxs], (x_tr, y_tr), (x_va, y_va)
    )
    assert all(c.error is None for c in ctxs)
    for a, b in zip(lone, together, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        diff = max((sa[k] - sb[k]).abs().max().item() for k in sa)
        assert diff < 1e-5
        pa = predictor(a, to_tensor)(d.x_test)
        pb = predictor(b, to_tensor)(d.x_test)
        assert np.array_equal(pa, pb)
    # the seeds really differ, so the agreement above is not trivially true
    w = [m.state_dict()["net.0.weight"] for m in lone]
    assert (w[0] - w[1]).abs().max().item() > 1e-2


def test_a_seed_does_not_depend_on_the_seeds_beside_it() -> None:
    task = get_task("digits")
    d = task.data()
    cfg = build_config(mlp.Config, {"epochs": 5})
    _, (x_tr, y_tr, x_va, y_va) = mlp._inputs(cfg, d)

    def train(seeds: list[int]) -> dict[int, dict[str, Any]]:
        ctxs = [_ctx(task, s, SeedContext) for s in seeds]
        models = [init_model(c, lambda: mlp.MLP(64, 10, cfg)) for c in ctxs]
        out = mlp.fit_many([cfg] * len(ctxs), ctxs, models, (x_tr, y_tr), (x_va, y_va))
        return {s: m.state_dict() for s, m in zip(seeds, out, strict=True)}

    alone = train([3])
    beside = train([0, 3, 5])
    other = train([3, 7])
    for k in alone[3]:
        assert torch.equal(alone[3][k], beside[3][k]) or (
            (alone[3][k] - beside[3][k]).abs().max().item() < 1e-6
        )
        assert (alone[3][k] - other[3][k]).abs().max().item() < 1e-6


SPEC = """
[experiment]
name = "vec"
task = "digits"
recipe = "mlp"
seeds = 3

[baseline]
epochs = 4
hidden = 32
dropout = 0.0
lr = 0.001
warmup_steps = 0
weight_decay = 0.0
schedule = "constant"
label_smoothing = 0.0
select = "last"
norm = "none"

[arms.wide]
hidden = 64

[arms.dropout]
dropout = 0.2

[arms.warm]
warmup_steps = 20
lr = 0.003

[arms.short]
epochs = 2
weight_decay = 0.001
schedule = "cosine"

[arms.smooth]
label_smoothing = 0.1
select = "best_val"

[arms.dropout-more]
dropout = 0.4
lr = 0.003

[arms.bn]
norm = "batch"
"""


def _ledger_view(led: Ledger, eid: str) -> dict[str, Any]:
    preds = {e["trial_id"]: e["predictions"] for e in led.test_evaluations(eid)}
    return {
        t.id: (
            t.status,
            t.attempt,
            t.result,
            preds[t.id],
            [(m[1], m[3]) for m in led.metrics(t.id)],
            np.array([m[4] for m in led.metrics(t.id) if m[3] != "lr"]),
        )
        for t in led.trials(eid)
    }


def test_the_ledger_reads_as_after_a_sequential_run(
    write_spec: Callable[..., Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(write_spec(SPEC))
    views = []
    flops: list[dict[str, Any]] = []
    sizes = {
        # the arms that differ only in lr, warmup, epochs, weight decay, schedule, label
        # smoothing and selection are one batched model; the wider one is its own; the two
        # with dropout layers (at different rates) another; batch norm runs trial by trial
        "vectorized": [12, 3, 6, 3],
        "groups-of-3": [3, 3, 3, 3, 3, 3, 3, 3],
    }
    for name, backend in [
        ("inline", InlineBackend()),
        ("vectorized", VectorizedBackend(threads=1)),
        ("groups-of-3", make_backend("vectorized", group=3, threads=1)),
    ]:
        led = Ledger(tmp_path / f"{name}.db")
        summary = run_experiment(spec, led, backend, show_progress=False)
        assert (summary.ran, summary.finished) == (24, 24)
        if name in sizes:
            assert backend.sizes == sizes[name]  # type: ignore[attr-defined]
        views.append(_ledger_view(led, spec.experiment_id))
        flops.append({t: r.get("flops") for t, r in led.compute(spec.experiment_id).items()})
        if name != "inline":
            prov = led.provenance(led.trials(spec.experiment_id)[0].provenance_id or "")
            assert prov["run"]["backend"] == "vectorized"
        led.close()
    # batch norm cannot be batched: that arm ran trial by trial, and the run said so
    err = capfd.readouterr().err
    assert "arm(s) 'bn' run their trials one after another: batch norm keeps" in err
    assert "24 trials as 4 group(s) of 12, 3, 6, 3\n" in err
    # each member is charged the FLOPs its lone run counts, block by block
    assert all(f is not None and f > 0 for f in flops[0].values())
    assert flops[1] == flops[0] and flops[2] == flops[0]
    seq = views[0]
    for view in views[1:]:
        assert view.keys() == seq.keys()
        for tid, (status, attempt, result, preds, names, values) in view.items():
            s_status, s_attempt, s_result, s_preds, s_names, s_values = seq[tid]
            assert (status, attempt, names) == (s_status, s_attempt, s_names)
            assert preds == s_preds, tid  # exact test predictions
            assert result == s_result
            np.testing.assert_allclose(values, s_values, rtol=1e-4, atol=1e-5)


def test_per_seed_failures_stay_with_their_seed(tmp_path: Path) -> None:
    """A seed whose metrics become NaN diverges alone; the others finish."""
    task = get_task("digits")
    cfg = build_config(mlp.Config, {"epochs": 2, "hidden": 16})
    ctxs = [_ctx(task, s, SeedContext) for s in range(3)]
    original = ctxs[1].log

    def poisoned(step: int | None = None, **metrics: Any) -> None:
        original(step=step, **{k: (float("nan") if step == 1 else v) for k, v in metrics.items()})

    ctxs[1].log = poisoned  # type: ignore[method-assign]
    mlp.train_many([cfg] * len(ctxs), ctxs)
    from fairtrial.backends.vectorized import _outcome_of

    outcomes = [_outcome_of(c, 1.0) for c in ctxs]
    assert [o.status for o in outcomes] == ["finished", "diverged", "finished"]
    assert "became nan at step 1" in (outcomes[1].error or "")
    assert ctxs[0].test_score is not None and ctxs[2].test_score is not None


def test_configs_that_cannot_be_batched_say_why() -> None:
    task = get_task("digits")
    for options, why in [({"norm": "batch"}, "batch norm")]:
        with pytest.raises(NotVectorizable, match=why):
            mlp.train_many([options], [_ctx(task, 0, SeedContext)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vectorized_on_a_gpu_matches_in_predictions() -> None:
    task = get_task("digits")
    cfg = build_config(mlp.Config, {"epochs": 5, "device": "cuda"})
    ctxs = [_ctx(task, s, SeedContext) for s in range(3)]
    mlp.train_many([cfg] * len(ctxs), ctxs)
    for s, c in enumerate(ctxs):
        lone = _ctx(task, s)
        mlp.train(cfg, lone)
        assert c.error is None
        assert abs((c.test_score or 0) - (lone.test_score or 0)) <= 2 / len(task.data().x_test)


USER_SPEC = """
[experiment]
name = "{name}"
task = "digits"
recipe = "{recipe}"
seeds = 3

[baseline]
lr = 0.05
{extra}

[arms.fast]
lr = 0.1
"""


def test_a_user_recipe_opts_in_and_one_without_a_batched_form_falls_back(
    write_spec: Callable[..., Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    for name, recipe, extra in [
        ("user", "my_recipe:train", ""),
        ("probe", "toy:probe", 'noise = 0.1\nmode = "ok"'),
    ]:
        body = USER_SPEC.format(name=name, recipe=recipe, extra=extra)
        # the README's example of a user's own recipe with its batched form
        example = Path(__file__).parent.parent / "examples" / "batched" / "my_recipe.py"
        (tmp_path / "my_recipe.py").write_text(example.read_text())
        spec = load_spec(write_spec(body, name=f"{name}.toml"))
        results = []
        for i, backend in enumerate([InlineBackend(), VectorizedBackend(threads=1)]):
            led = Ledger(tmp_path / f"{name}{i}.db")
            assert run_experiment(spec, led, backend, show_progress=False).finished == 6
            results.append(_ledger_view(led, spec.experiment_id))
        err = capfd.readouterr().err
        if recipe == "toy:probe":
            assert "recipe 'toy:probe' has no batched form" in err
        else:
            # the batched form ran: the arms differ in lr only, which it takes per member
            assert "6 trials as 1 group(s) of 6\n" in err
            assert "one after another" not in err
        for tid, view in results[1].items():
            assert view[:4] == results[0][tid][:4], tid  # status, attempt, result, predictions
