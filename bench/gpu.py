"""On a GPU: whole experiments as batched models, and a speed trial's cost verdicts with the
GPU's own energy counter.

The suite's ``gpu`` section (``python bench/suite.py --only gpu``; says so and skips without
CUDA):

- the demo's spec on the GPU (``device = "cuda"``): one trial alone, the demo's 4 arms x 10
  seeds one trial at a time (inline, the sequential baseline), the same 40 trials vectorized
  (are the per-seed results identical?), and 4 arms x 100 seeds vectorized;
- ``examples/speed/spec.toml`` on the GPU (inline): the train-time ratio of half the epochs,
  and the energy ratio from NVML's counter, each with its verdict.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from batched import _demo_spec, _results
from suite import Row, _run

ROOT = Path(__file__).resolve().parent.parent


def _on_gpu(spec: Any) -> Any:
    """``spec`` with every arm's config on the GPU (device is not a component: same arms)."""
    from dataclasses import replace

    arms = {n: replace(a, config={**a.config, "device": "cuda"}) for n, a in spec.arms.items()}
    return replace(spec, arms=arms, baseline={**spec.baseline, "device": "cuda"})


def bench_gpu(quick: bool, tmp: Path) -> list[Row]:
    try:
        import torch
    except ImportError:
        return [Row("gpu", "no torch", None, "s", note="skipped")]
    if not torch.cuda.is_available():
        return [Row("gpu", "no CUDA device", None, "s", note="skipped")]
    from fairtrial.backends import InlineBackend
    from fairtrial.backends.vectorized import VectorizedBackend

    name = torch.cuda.get_device_name(0)
    one = _on_gpu(_demo_spec(tmp, "one", seeds=2, arms=False))
    _run(one, InlineBackend(), tmp / "warm.db")
    lone = _run(one, InlineBackend(), tmp / "one.db") / 2
    demo = _on_gpu(_demo_spec(tmp, "demo"))
    seq_db, vec_db = tmp / "seq.db", tmp / "vec.db"
    seq = _run(demo, InlineBackend(), seq_db)
    vec = _run(demo, VectorizedBackend(), vec_db)
    same = _results(seq_db, demo.experiment_id) == _results(vec_db, demo.experiment_id)
    many = _on_gpu(_demo_spec(tmp, "many", seeds=20 if quick else 100))
    big = _run(many, VectorizedBackend(), tmp / "many.db")
    n = len(many.arms) * many.seeds
    rows = [
        Row("gpu", f"one demo trial alone on {name}", lone, "s", 1.0),
        Row("gpu", "demo, 40 trials one at a time (inline)", seq, "s", seq / lone),
        Row("gpu", "demo, 40 trials vectorized", vec, "s", vec / lone,
            f"{seq / vec:.1f}x faster than one at a time; "
            + ("per-seed results identical" if same else "per-seed results differ (GPU kernels)")),
        Row("gpu", f"demo's 4 arms x {many.seeds} seeds ({n} trials) vectorized", big, "s",
            big / lone, f"{big / (seq / 40 * n):.3f}x the time of {n} trials one at a time"),
    ]  # fmt: skip
    rows.append(_speed(tmp))
    return rows


def _speed(tmp: Path) -> Row:
    """The speed example on the GPU: its train-time and energy verdicts."""
    from rich.console import Console

    from fairtrial.analysis.document import analyze
    from fairtrial.backends import InlineBackend
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment
    from fairtrial.spec import load_spec

    text = (
        (ROOT / "examples/speed/spec.toml")
        .read_text()
        .replace("[baseline]", '[baseline]\ndevice = "cuda"')
    )
    path = tmp / "speed.toml"
    path.write_text(text)
    spec = load_spec(path)
    led = Ledger(tmp / "speed.db")
    run_experiment(spec, led, InlineBackend(), console=Console(file=io.StringIO()),
                   show_progress=False)  # fmt: skip
    c = analyze(led, led.experiment(spec.experiment_id)).comparison("half")
    led.close()
    costs = c.costs or {}
    parts = []
    for figure in ("train_time", "energy", "flops"):
        cv = costs.get(figure)
        if cv is not None:
            parts.append(f"{figure} {cv.ratio:.3g}x ({cv.verdict})")
        else:
            parts.append(f"{figure}: not measured")
    return Row("gpu", "examples/speed on the GPU: half vs baseline", None, "s", None,
               f"verdict {c.verdict}; " + "; ".join(parts))  # fmt: skip
