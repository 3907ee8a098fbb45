"""Per-seed results from TensorBoard event files, one folder per run: ``ROOT/ARM/seed_N/``.

Every folder under ROOT that holds event files (``*tfevents*``) is one run. Its path says
which: the last folder is the seed (``seed_N``, ``seed-N``, ``seed=N``, ``seedN`` or just
``N``), the folders between ROOT and it are the arm (``ROOT/adamw/lr_0.1/seed_3`` is arm
``adamw/lr_0.1``). The metric is a scalar tag; its last or best point is the value. The
events are read with TensorBoard's own reader (the ``tensorboard`` extra, imported only here);
the mapping to rows is :func:`fairtrial.imports.table.from_runs`, as for MLflow and W&B.
TensorBoard stores scalars as 32-bit floats: values carry that precision.
"""

from __future__ import annotations

import re
from pathlib import Path

from fairtrial.errors import ImportedDataError, require
from fairtrial.imports.table import ImportedResults, LoggedRun, ValueRule, _clip, _listed, from_runs

LAYOUT = "ROOT/ARM/seed_N/ (one folder of event files per run)"
_SEED = re.compile(r"(?:seed[_=-]?)?(-?\d+)", re.IGNORECASE)


def run_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds an event file, sorted."""
    return sorted({p.parent for p in root.rglob("*tfevents*") if p.is_file()})


def read_tensorboard(
    root: str | Path,
    *,
    metric: str,
    value: ValueRule = "last",
    direction: str = "max",
) -> ImportedResults:
    """The results of the runs under ``root``; ``metric`` is a scalar tag."""
    require("tensorboard", "tensorboard", "Reading TensorBoard event files")
    base = Path(root)
    source = str(root)
    if not base.is_dir():
        raise ImportedDataError(f"{source}: no such folder (the layout is {LAYOUT})")
    folders = run_folders(base)
    if not folders:
        raise ImportedDataError(f"{source}: no TensorBoard event files (the layout is {LAYOUT})")
    runs = []
    tags: set[str] = set()
    for folder in folders:
        rel = folder.relative_to(base)
        where = f"folder {rel.as_posix() or '.'}"
        m = _SEED.fullmatch(folder.name) if rel.parts else None
        if m is None or len(rel.parts) < 2:
            what = (
                f"'{_clip(folder.name)}' is not a seed (seed_N or N)"
                if m is None and rel.parts
                else "holds the events of a run without an arm folder above it"
            )
            raise ImportedDataError(f"{source}, {where}: {what}; the layout is {LAYOUT}")
        history, found = _scalars(folder, metric)
        tags |= found
        runs.append(LoggedRun(where, {"seed": m.group(1)}, history, arm="/".join(rel.parts[:-1])))
    if not any(r.history for r in runs):
        raise ImportedDataError(
            f"{source}: no run logged the scalar '{metric}'; --metric is one of "
            f"{_listed(sorted(tags)) or 'none logged'}"
        )
    return from_runs(
        runs,
        source=source,
        name=base.resolve().name or "tensorboard",
        metric=metric,
        value=value,
        direction=direction,
    )


def _scalars(folder: Path, tag: str) -> tuple[list[tuple[float, float]], set[str]]:
    """The (step, value) points of ``tag`` in the folder's event files, and every scalar tag
    they hold (TF1 scalar summaries, and TF2's scalars written as tensors)."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    scalars, tensors = set(tags.get("scalars") or []), set(tags.get("tensors") or [])
    if tag in scalars:
        points = [(float(e.step), float(e.value)) for e in acc.Scalars(tag)]
    elif tag in tensors:
        points = [
            (float(e.step), float(tensor_util.make_ndarray(e.tensor_proto).item()))
            for e in acc.Tensors(tag)
        ]
    else:
        points = []
    return points, scalars | tensors
