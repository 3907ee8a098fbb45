"""The command line as a package of small command modules over library functions.

The structure (module sizes, the command names, the entry points, no import of the CLI from
the library), and the library functions the commands print: the time estimate and power of
``fairtrial plan`` (:mod:`fairtrial.estimate`) and the progress of ``fairtrial status``
(:mod:`fairtrial.progress`), asserted as returned data on real ledgers.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fairtrial
from fairtrial import stats
from fairtrial.backends.local import split_cores
from fairtrial.estimate import PowerRow, plan_estimate, power_rows, time_estimate
from fairtrial.ledger import Ledger, TrialRow
from fairtrial.plan import plan_trials, seeds_needed
from fairtrial.progress import (
    code_versions,
    experiment_detail,
    experiments_progress,
    lease_text,
)
from fairtrial.spec import Spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(fairtrial.__file__).resolve().parent
CLI = SRC / "cli"

#: every command ``fairtrial`` has (those it had before it became a package, then export), in
#: the order it lists them
COMMANDS = [
    "run", "report", "analyze", "export", "plan", "status", "tasks", "recipes", "demo", "register",
    "diff", "bundle", "verify", "replicate", "serve", "push",
]  # fmt: skip


# -- structure ------------------------------------------------------------------------------------
def test_every_cli_module_is_under_300_lines_and_the_new_library_modules_under_600() -> None:
    modules = sorted(CLI.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "__main__.py", "run.py", "plan.py"}
    for module in modules:
        lines = len(module.read_text().splitlines())
        assert lines < 300, f"{module.name}: {lines} lines"
    for module in ("estimate.py", "progress.py"):
        lines = len((SRC / module).read_text().splitlines())
        assert lines < 600, f"{module}: {lines} lines"
    assert not (SRC / "cli.py").exists(), "one home for the CLI: the package"


def test_the_cli_exposes_the_same_commands_and_entry_points() -> None:
    import tomllib

    from fairtrial.cli import cli, main

    assert list(cli.commands) == COMMANDS
    assert callable(main)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"fairtrial": "fairtrial.cli:main"}


def test_python_m_fairtrial_cli_is_the_command(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC.parent), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "fairtrial.cli", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert f"  {name} " in out.stdout, name


def _imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_library_never_imports_the_cli() -> None:
    """Library modules (the backends among them) import nothing of ``fairtrial.cli``, so the
    CLI package sits on top and no import circle runs through it."""
    for path in sorted(SRC.rglob("*.py")):
        if CLI in path.parents:
            continue
        cli_imports = {
            n for n in _imports_of(path) if n == "fairtrial.cli" or n.startswith("fairtrial.cli.")
        }
        assert not cli_imports, f"{path.relative_to(SRC)} imports {sorted(cli_imports)}"
    code = textwrap.dedent(
        """
        import sys
        import fairtrial, fairtrial.backends, fairtrial.runner, fairtrial.estimate
        import fairtrial.progress, fairtrial.server, fairtrial.replicate
        assert not any(m.split(".")[:2] == ["fairtrial", "cli"] for m in sys.modules), [
            m for m in sys.modules if m.startswith("fairtrial.cli")
        ]
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr


# -- a real ledger with chosen results ------------------------------------------------------------
SPEC = """
[experiment]
name = "{name}"
task = "digits"
recipe = "logistic"
seeds = {seeds}

[hypothesis]
smallest_effect = 0.02
alpha = 0.05
power = 0.8

[baseline]
C = 1.0
max_iter = 50

[arms.strong]
C = 10.0
max_iter = 80

[arms.weak]
C = 0.01

[ablations]
leave_one_out = "strong"
"""


def _spec(name: str = "est", seeds: int = 4) -> Spec:
    return parse_spec(SPEC.format(name=name, seeds=seeds))


@functools.cache
def _property_spec() -> Spec:
    return _spec()


def _record(
    ledger: Ledger,
    spec: Spec,
    results: dict[tuple[str, int], tuple[str, float | None, float | None]],
) -> None:
    """Put ``spec`` in ``ledger`` and end each listed trial (arm, seed) as (status, result,
    wall time); unlisted trials stay pending."""
    ledger.upsert_experiment(
        experiment_id=spec.experiment_id,
        name=spec.name,
        spec_hash=spec.spec_hash,
        spec=spec.normalized(),
        arms=spec.arm_table(),
        spec_path=None,
        task=spec.task,
        task_checksum=spec.task_checksum,
        metric=spec.metric,
        direction=spec.direction,
        seeds=spec.seeds,
        root_seed=spec.root_seed,
    )
    plans = plan_trials(spec, code_hash=spec.name.ljust(64, "0"))
    ledger.add_trials(plans)
    for p in plans:
        if (p.arm, p.seed) not in results:
            continue
        status, result, wall = results[p.arm, p.seed]
        failed = status != "finished"
        attempt = ledger.claim(p.trial_id, 0, "testhost:1", lease=60)
        assert attempt is not None
        if status == "running":
            continue
        ledger.finish(
            p.trial_id,
            attempt,
            status=status,
            result=result,
            wall_time=wall,
            error=f"ValueError: {p.arm} broke" if failed else None,
            error_detail=f"Traceback\n  line\nValueError: {p.arm}" if failed else None,
        )


def test_time_estimate_is_the_mean_finished_trial_time_times_trials_over_workers(
    ledger: Ledger,
) -> None:
    spec = _spec()
    empty = time_estimate(ledger, "digits", 12)
    assert (empty.seconds, empty.earlier, empty.mean_trial_seconds) == (None, 0, None)
    assert empty.workers == split_cores(None, None)[0] and empty.trials == 12
    _record(
        ledger,
        spec,
        {
            ("baseline", 0): ("finished", 0.9, 1.0),
            ("strong", 0): ("finished", 0.91, 2.0),
            ("weak", 0): ("finished", 0.8, 6.0),
            # a failed trial's time is not a trial's time
            ("baseline", 1): ("failed", None, 100.0),
        },
    )
    est = time_estimate(ledger, "digits", 12, workers=4)
    assert (est.task, est.trials, est.workers, est.earlier) == ("digits", 12, 4, 3)
    assert est.mean_trial_seconds == pytest.approx(3.0)
    assert est.seconds == pytest.approx(3.0 * 12 / 4)
    other = time_estimate(ledger, "mnist1d", 12, workers=4)
    assert other.seconds is None and other.earlier == 0, "only trials on the same task count"


def test_power_rows_give_the_mde_and_the_seeds_needed_per_arm(ledger: Ledger) -> None:
    spec = _spec(seeds=6)
    base = [0.90, 0.91, 0.89, 0.92]
    strong = [0.93, 0.935, 0.91, 0.96]
    results: dict[tuple[str, int], tuple[str, float | None, float | None]] = {}
    for seed, (b, s) in enumerate(zip(base, strong, strict=True)):
        results["baseline", seed] = ("finished", b, 1.0)
        results["strong", seed] = ("finished", s, 1.0)
        # the ablation's scores never enter: power is of the arms against the baseline
        results["strong-no-C", seed] = ("finished", 0.5, 1.0)
    results["weak", 0] = ("finished", 0.7, 1.0)  # one pair: no sd yet
    results["weak", 1] = ("failed", None, 1.0)
    _record(ledger, spec, results)
    assert spec.arms["strong-no-C"].kind == "ablation"

    est = plan_estimate(ledger, spec, 30, workers=2)
    assert est.done == 4 * 2 + 4 + 2 and est.time.trials == 30
    sd = statistics.stdev(s - b for b, s in zip(base, strong, strict=True))
    assert est.power == [
        PowerRow(
            arm="strong",
            n_pairs=4,
            sd_diff=pytest.approx(sd),
            seeds=6,
            mde=pytest.approx(stats.minimum_detectable_effect(sd, 6, alpha=0.05, power=0.8)),
            alpha=0.05,
            power=0.8,
            smallest_effect=0.02,
            seeds_needed=seeds_needed(sd, 0.02, 0.05, 0.8),
        )
    ]
    assert est.power[0].mde > 0 and est.power[0].seeds_needed >= 6  # type: ignore[operator]

    # without a smallest effect no seeds are asked for
    bare = dataclasses.replace(
        spec, hypothesis=dataclasses.replace(spec.hypothesis, smallest_effect=None)
    )
    (row,) = power_rows(bare, ledger.trials(spec.experiment_id))
    assert row.smallest_effect is None and row.seeds_needed is None
    assert row.sd_diff == pytest.approx(sd)


def test_plan_estimate_of_an_experiment_not_in_the_store(ledger: Ledger) -> None:
    est = plan_estimate(ledger, _spec(name="never"), 9, workers=3)
    assert est.done is None and est.power == []
    assert est.time.seconds is None and est.time.workers == 3


def _row(arm: str, seed: int, status: str, result: float | None) -> TrialRow:
    return TrialRow(
        id=f"{arm}-{seed}", experiment_id="e", arm=arm, seed=seed, status=status, attempt=1,
        config={}, seeds={}, result=result, error=None, error_detail=None, owner=None,
        started_at=None, finished_at=None, wall_time=None, phases={}, task_checksum=None,
        provenance_id=None,
    )  # fmt: skip


_SCORES = st.dictionaries(
    st.integers(0, 9), st.floats(0, 1, allow_nan=False, allow_subnormal=False), max_size=10
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(base=_SCORES, arm=_SCORES, minimise=st.booleans())
def test_power_rows_pair_the_finished_seeds_both_arms_have(
    base: dict[int, float], arm: dict[int, float], minimise: bool
) -> None:
    spec = _property_spec()
    if minimise:
        spec = dataclasses.replace(spec, direction="min")
    rows = [_row("baseline", s, "finished", v) for s, v in base.items()]
    rows += [_row("strong", s, "finished", v) for s, v in arm.items()]
    # failed trials and finished ones without a result pair with nothing
    rows += [_row("strong", s + 20, "failed", None) for s in base]
    rows += [_row("baseline", 30, "finished", None)]
    paired = sorted(set(base) & set(arm))
    got = power_rows(spec, rows)
    if len(paired) < 2:
        assert got == []
        return
    (row,) = got
    sd = statistics.stdev(arm[s] - base[s] for s in paired)
    assert row.arm == "strong" and row.n_pairs == len(paired)
    assert row.sd_diff == pytest.approx(sd, abs=1e-12)
    if row.sd_diff == 0:
        assert row.mde == 0.0
    else:
        assert row.mde == pytest.approx(
            stats.minimum_detectable_effect(row.sd_diff, 4, alpha=0.05, power=0.8)
        )


# -- status ---------------------------------------------------------------------------------------
def test_progress_counts_lists_and_explains_the_trials(ledger: Ledger) -> None:
    assert experiments_progress(ledger) == []
    spec = _spec(seeds=2)
    _record(
        ledger,
        spec,
        {
            ("baseline", 0): ("finished", 0.9, 1.5),
            ("strong", 0): ("finished", 0.92, 1.0),
            ("weak", 0): ("failed", None, 0.1),
            ("weak", 1): ("failed", None, 0.1),
            ("strong-no-C", 0): ("diverged", None, 0.2),
            ("baseline", 1): ("running", None, None),
        },
    )
    (p,) = experiments_progress(ledger)
    code = spec.name.ljust(64, "0")[:12]
    assert (p.id, p.name, p.task, p.code) == (spec.experiment_id, "est", "digits", code)
    assert (p.total, p.finished, p.failed, p.diverged, p.running, p.pending, p.reused) == (
        10, 2, 2, 1, 1, 4, 0,
    )  # fmt: skip
    assert p.failing == 3

    detail = experiment_detail(ledger, ledger.experiment(spec.experiment_id))
    assert (detail.id, detail.name, detail.code) == (spec.experiment_id, "est", code)
    assert detail.failing and detail.superseded == 0
    by_key = {(t.arm, t.seed): t for t in detail.trials}
    assert len(by_key) == 10
    first = by_key["baseline", 0]
    assert (first.status, first.attempt, first.result, first.wall_time) == (
        "finished", 1, 0.9, 1.5,
    )  # fmt: skip
    assert first.reason == "" and first.reused_from is None and len(first.trial) == 12
    assert by_key["weak", 1].reason == "ValueError: weak broke"
    running = by_key["baseline", 1]
    assert running.reason.startswith("held by testhost pid 1, lease renewed ")
    assert running.reason.endswith(" s ago (current)")
    # one failure per distinct error (in the ledger's order), with its traceback's tail
    assert [(f.arm, f.seed, f.error) for f in detail.failures] == [
        ("strong-no-C", 0, "ValueError: strong-no-C broke"),
        ("weak", 0, "ValueError: weak broke"),
    ]
    assert detail.failures[1].tail == "Traceback\n  line\nValueError: weak"


def test_lease_text_and_code_versions() -> None:
    row = dataclasses.replace(_row("a", 0, "running", None), owner="box:42:1.5")
    assert lease_text(row, 100.0) == "held by box pid 42, no lease: the next run takes it over"
    fresh = dataclasses.replace(row, heartbeat_at=95.0)
    assert lease_text(fresh, 100.0) == "held by box pid 42, lease renewed 5 s ago (current)"
    stale = dataclasses.replace(row, owner=None, heartbeat_at=0.0)
    assert lease_text(stale, 1e6) == (
        "held by an unknown run, lease renewed 1000000 s ago (expired)"
    )
    assert code_versions([]) == "—"
    rows = [
        dataclasses.replace(row, code_hash="b" * 64),
        dataclasses.replace(row, code_hash="a" * 64),
        row,
        dataclasses.replace(row, code_hash="a" * 64),
    ]
    assert code_versions(rows) == f"{'a' * 12}, {'b' * 12}, unrecorded"
