"""What the per-comparison statistics of a report cost, and how the bootstrap compares to peers.

One process, one machine, the same data for every row::

    python bench/stats_bench.py [--arms 20] [--seeds 50] [--resamples 10000] [--repeat 5]

1. ``bench_comparisons``: the statistics a report computes for every comparison against the
   baseline (``arms - 1`` of them): BCa bootstrap interval, Monte Carlo permutation test (both
   with ``n_resamples``), paired t-test, TOST, probability of improvement (bootstrap with
   ``n_resamples``) and the seeds needed; timed as a whole and per statistic.
2. The same ``arms - 1`` bootstrap intervals of the mean paired difference with
   ``fairtrial.stats.paired_bootstrap_ci`` (BCa and percentile), ``scipy.stats.bootstrap``
   (BCa, ``paired=True``, ``vectorized=True``) and rliable's ``get_interval_estimates`` (its
   default percentile method; the paired differences given as runs × 1 task, statistic the
   mean), each with ``n_resamples`` resamples, with the ratio to fairtrial's BCa.

Every row is the median of ``--repeat`` timed runs after one warm-up run
(``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fairtrial import stats as S

sys.path.insert(0, str(Path(__file__).resolve().parent))
from log_overhead import _version
from log_overhead import machine_info as machine_record


def machine_info() -> dict[str, Any]:
    """The machine, as bench/log_overhead.py records it, and the versions compared here."""
    info = machine_record()
    return {
        "cpu": info["cpu"],
        "cores": info["usable_cores"],
        "load_average": info["load_average"],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        **{lib: _version(lib) for lib in ("fairtrial", "numpy", "scipy", "rliable", "arch")},
    }


def make_scores(n_arms: int, n_seeds: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """(arms, seeds) accuracies: a shared per-seed effect, an arm effect, and noise."""
    rng = np.random.default_rng(seed)
    seed_effect = rng.normal(0.0, 0.01, size=n_seeds)
    arm_effect = np.linspace(0.0, 0.01, n_arms)[:, None]
    noise = rng.normal(0.0, 0.005, size=(n_arms, n_seeds))
    return np.asarray(0.9 + seed_effect[None, :] + arm_effect + noise)


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up: imports, caches
    samples = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples


def _comparison_parts(
    a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], n_resamples: int, margin: float
) -> dict[str, Callable[[], Any]]:
    return {
        "BCa bootstrap": lambda: S.paired_bootstrap_ci(a, b, n_resamples=n_resamples),
        "permutation test (MC)": lambda: S.paired_permutation_test(a, b, n_resamples=n_resamples),
        "paired t-test": lambda: S.paired_t_test(a, b),
        "TOST": lambda: S.tost_paired(a, b, margin=margin),
        "prob. of improvement": lambda: S.probability_of_improvement(a, b, n_resamples=n_resamples),
        "required seeds": lambda: S.required_seeds(float(np.std(b - a, ddof=1)), margin),
    }


def bench_comparisons(
    n_arms: int = 20, n_seeds: int = 50, n_resamples: int = 10_000, *, repeat: int = 5
) -> dict[str, Any]:
    """Time every per-comparison statistic for ``n_arms - 1`` comparisons against arm 0.

    Returns ``{"total_s": median seconds for all comparisons, "parts_s": {statistic: median
    seconds summed over the comparisons}, "samples_s": [...], "comparisons": [per comparison
    result dicts], ...settings}``.
    """
    scores = make_scores(n_arms, n_seeds)
    base = scores[0]
    margin = 0.002
    parts = [_comparison_parts(base, scores[i], n_resamples, margin) for i in range(1, n_arms)]

    def everything() -> list[dict[str, Any]]:
        out = []
        for p in parts:
            results = {name: fn() for name, fn in p.items()}
            out.append(
                {name: (r.to_dict() if hasattr(r, "to_dict") else r) for name, r in results.items()}
            )
        return out

    total, samples = _time(everything, repeat)
    parts_s = {}
    for name in parts[0]:

        def one_kind(name: str = name) -> None:
            for p in parts:
                p[name]()

        parts_s[name] = _time(one_kind, repeat)[0]
    return {
        "n_arms": n_arms,
        "n_seeds": n_seeds,
        "n_resamples": n_resamples,
        "comparisons": n_arms - 1,
        "total_s": total,
        "samples_s": samples,
        "parts_s": parts_s,
        "results": everything(),
    }


def bench_bootstrap_peers(
    n_arms: int = 20, n_seeds: int = 50, n_resamples: int = 10_000, *, repeat: int = 5
) -> list[dict[str, Any]]:
    """The same ``n_arms - 1`` paired bootstrap intervals with fairtrial, scipy and rliable."""
    from scipy.stats import bootstrap

    scores = make_scores(n_arms, n_seeds)
    base, others = scores[0], scores[1:]

    def ours(method: str) -> Callable[[], Any]:
        return lambda: [
            S.paired_bootstrap_ci(base, b, n_resamples=n_resamples, method=method) for b in others
        ]

    def mean_diff(x: Any, y: Any, axis: int = -1) -> Any:
        return np.mean(y - x, axis=axis)

    def scipy_bca() -> list[Any]:
        return [
            bootstrap(
                (base, b),
                mean_diff,
                paired=True,
                vectorized=True,
                method="BCa",
                n_resamples=n_resamples,
                random_state=np.random.default_rng(0),
            ).confidence_interval
            for b in others
        ]

    rows: list[dict[str, Any]] = []
    runs: list[tuple[str, Callable[[], Any] | None, str]] = [
        ("fairtrial paired_bootstrap_ci (BCa)", ours("BCa"), ""),
        ("fairtrial paired_bootstrap_ci (percentile)", ours("percentile"), ""),
        ("scipy.stats.bootstrap (BCa, paired, vectorized)", scipy_bca, ""),
    ]
    try:
        from rliable import library as rly

        diffs = {f"arm{i}": (b - base)[:, None] for i, b in enumerate(others, 1)}

        def rliable_pct() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return rly.get_interval_estimates(
                    diffs, lambda x: np.array([np.mean(x)]), reps=n_resamples
                )

        runs.append(("rliable get_interval_estimates (percentile)", rliable_pct, ""))
    except Exception as exc:  # not installed, or its arch dependency does not import
        runs.append(("rliable get_interval_estimates (percentile)", None, f"unavailable: {exc}"))
    for name, fn, note in runs:
        if fn is None:
            rows.append({"method": name, "status": note})
            continue
        median, samples = _time(fn, repeat)
        rows.append({"method": name, "status": "ok", "seconds": median, "samples_s": samples})
    floor = rows[0]["seconds"]
    for row in rows:
        if row["status"] == "ok":
            row["ratio"] = row["seconds"] / floor
    return rows


def bench_full_analysis(n_arms: int, n_seeds: int, n_resamples: int, *, repeat: int = 5) -> float:
    """Median seconds of :func:`fairtrial.analysis.analyze_scores` on the same experiment."""
    from fairtrial.analysis import Hypothesis, Options, analyze_scores

    values = make_scores(n_arms, n_seeds)
    names = ["baseline"] + [f"arm{i}" for i in range(1, n_arms)]
    scores = {n: dict(enumerate(values[i].tolist())) for i, n in enumerate(names)}
    table = {
        "arms": [
            {"name": n, "kind": "baseline" if i == 0 else "arm", "components": {}}
            for i, n in enumerate(names)
        ],
        "ablations": [],
    }
    hyp, opts = Hypothesis(smallest_effect=0.005), Options(n_resamples=n_resamples)
    seconds, _ = _time(lambda: analyze_scores(scores, table, "max", hyp, opts), repeat)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args(argv)

    info = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    comp = bench_comparisons(args.arms, args.seeds, args.resamples, repeat=args.repeat)
    print(
        f"\n{comp['comparisons']} comparisons × {args.seeds} seeds, "
        f"{args.resamples} resamples each (median of {args.repeat}):"
    )
    print(f"  {'statistic':<28}{'seconds':>10}{'share':>8}")
    for name, sec in comp["parts_s"].items():
        print(f"  {name:<28}{sec:>10.4f}{sec / comp['total_s']:>8.0%}")
    print(f"  {'all statistics, together':<28}{comp['total_s']:>10.4f}")
    full = bench_full_analysis(args.arms, args.seeds, args.resamples, repeat=args.repeat)
    print(
        f"  {'full analysis (+ Holm, MDE,':<28}{full:>10.4f}\n  {'verdicts: analyze_scores)':<28}"
    )

    peers = bench_bootstrap_peers(args.arms, args.seeds, args.resamples, repeat=args.repeat)
    print(f"\nthe same {comp['comparisons']} paired bootstrap intervals (median of {args.repeat}):")
    print(f"  {'method':<50}{'seconds':>10}{'× fairtrial BCa':>17}")
    for row in peers:
        if row["status"] != "ok":
            print(f"  {row['method']:<50}{row['status']}")
        else:
            print(f"  {row['method']:<50}{row['seconds']:>10.4f}{row['ratio']:>17.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"machine": info, "comparisons": comp, "full_analysis_s": full, "bootstrap": peers},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
