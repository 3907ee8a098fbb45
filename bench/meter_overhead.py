"""What metering costs a real trial: the built-in MLP on digits, meter on vs off, one process.

::

    python bench/meter_overhead.py [--pairs N] [--epochs E] [--recipe mlp|cnn1d] [--json FILE]

Each pair runs the same trial (same seed, same config) twice through
:func:`fairtrial.backends.execute_trial`, once with ``TrialJob(meter=True)`` and once with
``meter=False``, alternating which goes first so that drift of the machine (other load,
frequency scaling) falls on both alike. One warm-up trial runs first, untimed, so that torch
import and the task's loading are not counted. The figures are the trial's wall time as
``execute_trial`` reports it and the process CPU time around it; the overhead is
median(on) / median(off) - 1, and for wall time also the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any


def _job(recipe: str, epochs: int, meter: bool, seed: int) -> Any:
    from fairtrial.backends import TrialJob
    from fairtrial.recipes import BUILTIN_RECIPES
    from fairtrial.tasks import get_task

    task_name = "digits" if recipe == "mlp" else "mnist1d"
    task = get_task(task_name)
    return TrialJob(
        trial_id=f"bench/{recipe}/{seed}",
        experiment_id="bench",
        arm="baseline",
        seed=seed,
        attempt=1,
        config={"epochs": epochs},
        root_seed=0,
        task=task_name,
        task_checksum=task.checksum,
        metric=task.metric,
        recipe=BUILTIN_RECIPES[recipe],
        target=0.9,
        target_metric="val_accuracy",
        meter=meter,
        threads=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--recipe", choices=["mlp", "cnn1d"], default="mlp")
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args()

    from fairtrial.backends import execute_trial
    from fairtrial.provenance import cpu_model

    def emit(kind: str, payload: Any) -> None:
        pass

    print(
        f"# {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}, recipe {args.recipe}, {args.epochs} epochs, "
        f"{args.pairs} pairs"
    )
    warm = execute_trial(_job(args.recipe, args.epochs, True, 0), emit)
    assert warm.status == "finished", warm.error
    on: list[float] = []
    off: list[float] = []
    cpu_on: list[float] = []
    cpu_off: list[float] = []
    for i in range(args.pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        for meter in order:
            cpu0 = time.process_time()
            out = execute_trial(_job(args.recipe, args.epochs, meter, 0), emit)
            cpu = time.process_time() - cpu0
            assert out.status == "finished", out.error
            (on if meter else off).append(out.wall_time)
            (cpu_on if meter else cpu_off).append(cpu)
            if meter and i == 0:
                flops = out.compute.get("flops")
                print(f"# one metered record: flops={flops:.3g}, "
                      f"peak_rss={out.compute.get('peak_rss')}, "
                      f"energy_cpu={out.compute.get('energy_cpu_method')}")  # fmt: skip
        print(f"pair {i + 1:2d}: on {on[-1]:.3f} s  off {off[-1]:.3f} s", flush=True)
    med_on, med_off = statistics.median(on), statistics.median(off)
    pair_ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
    print(f"median wall time: metering on {med_on:.3f} s, off {med_off:.3f} s")
    c_on, c_off = statistics.median(cpu_on), statistics.median(cpu_off)
    print(f"median CPU time:  metering on {c_on:.3f} s, off {c_off:.3f} s "
          f"({100 * (c_on / c_off - 1):+.2f} %)")  # fmt: skip
    print(f"overhead: {100 * (med_on / med_off - 1):+.2f} % (medians), "
          f"{100 * (pair_ratio - 1):+.2f} % (median of per-pair ratios)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"on": on, "off": off, "cpu_on": cpu_on, "cpu_off": cpu_off, "args": vars(args)},
                fh,
                indent=2,
            )


if __name__ == "__main__":
    sys.exit(main())
