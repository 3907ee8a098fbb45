"""Trust at run time: nothing is certified that is not what it claims, and failures are loud.

Each test here reproduces a way a run used to give a confident wrong answer or fail silently.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from conftest import toy_spec
from fairtrial.analysis import Options
from fairtrial.analysis.document import analyze as _analyze
from fairtrial.backends import InlineBackend
from fairtrial.ledger import Ledger
from fairtrial.plan import permutation_floor, plan_seeds, seed_floor, seed_floor_warning
from fairtrial.runner import RunSummary, run_experiment
from fairtrial.spec import load_spec


def analyze(*args, **kwargs):  # type: ignore[no-untyped-def]
    """The analysis as its JSON document (the stable interface these tests check)."""
    return _analyze(*args, **kwargs).to_dict()


EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"
FAST = Options(n_resamples=2000)
NOISY = "[arms.noisy]\nnoise = 0.3\n"


def run(spec_path: Path, ledger: Ledger, **kw: object) -> tuple[RunSummary, str]:
    """Run a spec inline; returns the summary and what the run printed."""
    out = io.StringIO()
    console = Console(file=out, width=300)
    summary = run_experiment(
        load_spec(spec_path), ledger, InlineBackend(), console=console, show_progress=False, **kw
    )  # type: ignore[arg-type]
    return summary, out.getvalue()


def ft(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("FAIRTRIAL_STORE", None)
    return subprocess.run(
        [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


BLIND = """
[experiment]
name = "blind"
task = "digits"
recipe = "toy:fixed_seed"
seeds = 8
{extra}
[baseline]
shrink = 1.0
[arms.shrunk]
shrink = 0.6
"""


# -- 1. a recipe that ignores its seeds ----------------------------------------------------------
def test_a_recipe_that_ignores_its_seeds_is_invalid_not_better(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    summary, printed = run(write_spec(BLIND.format(extra="")), ledger)
    assert summary.finished == 16
    # said while it runs, as soon as two seeds of an arm agree to the last prediction
    assert "seeds 0, 1 of arm 'baseline' gave identical test predictions" in printed
    assert "deterministic = true in [experiment]" in printed
    doc = analyze(ledger, ledger.experiment(summary.experiment_id), FAST)
    (c,) = doc["comparisons"]
    # every seed gave the same +0.0028: the exact test's p is 2/2^8 < 0.05, yet nothing here
    # measures seed-to-seed variation
    assert c["effect"] > 0 and c["p"] < 0.05
    assert c["verdict"] == "invalid"
    assert "every seed of arm" in c["reason"] and "does not use its seeds" in c["reason"]
    assert doc["arms"]["baseline"]["seed_blind"] and doc["arms"]["shrunk"]["seed_blind"]
    assert c["p_adjusted"] is None


def test_a_recipe_that_uses_its_seeds_is_judged(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    summary, printed = run(write_spec(toy_spec(seeds=6, arms=NOISY)), ledger)
    assert "identical test predictions" not in printed
    doc = analyze(ledger, ledger.experiment(summary.experiment_id), FAST)
    assert doc["comparisons"][0]["verdict"] != "invalid"
    assert not any(a["seed_blind"] for a in doc["arms"].values())


def test_a_deterministic_recipe_says_so_and_is_one_run_per_arm(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    spec_path = write_spec(BLIND.format(extra="deterministic = true").replace("seeds = 8", ""))
    spec = load_spec(spec_path)
    assert spec.deterministic and spec.seeds == 2  # seed 1 checks seed 0
    summary, printed = run(spec_path, ledger)
    assert "identical test predictions" not in printed
    doc = analyze(ledger, ledger.experiment(summary.experiment_id), FAST)
    (c,) = doc["comparisons"]
    assert c["verdict"] == "better" and c["n_pairs"] == 1 and c["p"] is None
    assert "one run per arm" in c["reason"]
    # a recipe with randomness that claims to have none is caught by the check seed
    noisy = write_spec(
        toy_spec(name="claims", seeds=2, arms=NOISY, extra="deterministic = true"), "claims.toml"
    )
    summary, _ = run(noisy, ledger)
    doc = analyze(ledger, ledger.experiment(summary.experiment_id), FAST)
    assert doc["comparisons"][0]["verdict"] == "invalid"
    assert "has randomness" in doc["comparisons"][0]["reason"]


# -- 2, 3. trial identity: code changes run anew, unchanged trials are reused ------------------
def test_an_edited_recipe_runs_anew_and_the_old_trials_stay_out(
    write_spec: Callable[..., Path], ledger: Ledger, tmp_path: Path
) -> None:
    spec_path = write_spec(toy_spec(seeds=3, arms=NOISY))
    first, _ = run(spec_path, ledger)
    assert first.ran == 6
    old_code = analyze(ledger, ledger.experiment(first.experiment_id), FAST)["experiment"]["code"]
    toy = tmp_path / "toy.py"
    toy.write_text(toy.read_text() + "\n# an edit that changes nothing the recipe computes\n")
    again, printed = run(spec_path, ledger)
    assert again.ran == 6 and again.replaced == 6
    assert "the recipe's code changed" in printed and "out of this verdict" in printed
    doc = analyze(ledger, ledger.experiment(again.experiment_id), FAST)
    assert len(doc["experiment"]["code"]) == 1 and doc["experiment"]["code"] != old_code
    assert {t.code_hash for t in ledger.trials(again.experiment_id)} == set(
        doc["experiment"]["code"]
    )
    with ledger.engine.connect() as c:  # the old trials are still in the ledger
        from sqlalchemy import func, select

        from fairtrial.ledger import schema

        assert c.execute(select(func.count()).select_from(schema.trials)).scalar() == 12
    # an unchanged recipe runs nothing
    assert run(spec_path, ledger)[0].ran == 0


def test_an_edit_between_interrupt_and_resume_never_mixes_code(
    write_spec: Callable[..., Path], ledger: Ledger, tmp_path: Path
) -> None:
    spec_path = write_spec(toy_spec(seeds=3, arms=NOISY))
    first, _ = run(spec_path, ledger)
    eid = first.experiment_id
    # as a run killed after four of its six trials leaves the ledger
    from sqlalchemy import update

    from fairtrial.ledger import schema

    with ledger.engine.begin() as c:
        for arm in ("baseline", "noisy"):
            trial = ledger.trial_at(eid, arm, 2)
            c.execute(
                update(schema.trials)
                .where(schema.trials.c.id == trial.id)
                .values(status="interrupted", result=None)
            )
    helper = tmp_path / "helper_mod.py"
    helper.write_text("SCALE = 1.0\n")
    toy = tmp_path / "toy.py"
    toy.write_text(toy.read_text() + "\nimport helper_mod  # noqa: E402, F401\n")
    resumed, _ = run(spec_path, ledger)
    assert resumed.ran == 6, "every trial of the old code runs again, not only the unfinished"
    codes = {t.code_hash for t in ledger.trials(eid)}
    assert len(codes) == 1
    # an imported helper is part of the code: editing it alone gives new trials too
    helper.write_text("SCALE = 2.0\n")
    assert run(spec_path, ledger)[0].ran == 6


def test_adding_an_arm_runs_only_the_new_arm(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    first, _ = run(write_spec(toy_spec(seeds=3, arms=NOISY)), ledger)
    assert first.ran == 6
    more = NOISY + "[arms.noisier]\nnoise = 0.6\n"
    second, _ = run(write_spec(toy_spec(seeds=3, arms=more)), ledger)
    assert second.experiment_id != first.experiment_id
    assert second.ran == 3 and second.reused == 6
    doc = analyze(ledger, ledger.experiment(second.experiment_id), FAST)
    assert doc["experiment"]["reused"] == 6
    assert {c["arm"] for c in doc["comparisons"]} == {"noisy", "noisier"}
    reused = [t for t in ledger.trials(second.experiment_id) if t.reused]
    assert {t.arm for t in reused} == {"baseline", "noisy"} and all(
        t.origin == first.experiment_id for t in reused
    )


def test_a_schema_1_ledger_is_migrated_and_its_trials_rerun(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "old.db"
    spec_path = write_spec(toy_spec(seeds=2, arms=NOISY))
    led = Ledger(db)
    first, _ = run(spec_path, led)
    led.close()
    # make it look as a ledger written before trial identities: ids are experiment/arm/seed
    con = sqlite3.connect(db)
    con.execute("DROP TABLE experiment_trials")
    con.execute("ALTER TABLE trials DROP COLUMN code_hash")
    con.execute("UPDATE trials SET id = experiment_id || '/' || arm || '/' || seed")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    con.commit()
    con.close()
    led = Ledger(db)
    old = led.trials(first.experiment_id)
    assert {t.id for t in old} == {
        f"{first.experiment_id}/{a}/{s}" for a in ("baseline", "noisy") for s in (0, 1)
    }
    assert all(t.status == "finished" and t.code_hash is None for t in old)
    again, printed = run(spec_path, led)
    assert again.ran == 4 and "out of this verdict" in printed
    led.close()


# -- 4. the seed plan respects the test that decides --------------------------------------------
def test_the_seed_plan_respects_the_permutation_test(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    assert 2 / 2**5 > 0.05 and permutation_floor(0.05) == 6
    assert permutation_floor(0.05 / 3) == 7  # Holm over 3 arms: 2/2^6 = 0.031 is not below 0.0167
    table = {
        "arms": [
            {"name": "baseline", "kind": "baseline"},
            {"name": "proposed", "kind": "arm"},
        ],
        "ablations": [],
    }
    assert seed_floor(table, 0.05) == 6
    warning = seed_floor_warning(5, table, 0.05)
    assert warning is not None and "0.0625" in warning and "at least 6" in warning
    assert seed_floor_warning(6, table, 0.05) is None
    # a huge effect (d_z about 8) in a 5-seed pilot: the t-test would need 3 seeds, but with
    # fewer than 6 the permutation test can never reject
    pilot = {
        "baseline": {s: 0.80 + 0.001 * s for s in range(5)},
        "proposed": {s: 0.90 + 0.001 * s + 0.0012 * (-1) ** s for s in range(5)},
    }
    plan = plan_seeds(
        pilot, table, "max", smallest_effect=0.05, alpha=0.05, power=0.8, max_seeds=50
    )
    assert plan["seeds"] >= 6 and plan["needed"] >= 6 and plan["floor"] == 6
    spec = write_spec(toy_spec(seeds=5, arms=NOISY))
    out = ft("plan", str(spec), cwd=tmp_path)
    assert out.returncode == 0 and "5 seeds can never give a verdict of better or worse" in (
        out.stdout
    )


# -- 5. failures fail ----------------------------------------------------------------------------
def test_failures_exit_non_zero_stop_early_and_show_their_traceback(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    broken = toy_spec(name="broken", seeds=4, arms=NOISY).replace('mode = "ok"', 'mode = "raise"')
    spec = write_spec(broken)
    out = ft("run", str(spec), "--backend", "inline", "--no-report", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    err = out.stderr
    assert "stopped early" in err and "--keep-going" in err
    assert "ran 2 trials" in err, "the first trial of each arm, then stop"
    # the traceback's last lines, once for the one distinct error
    assert err.count('raise ValueError("boom from the recipe")') == 1
    assert "not every trial finished" in err and "exit status 1" in err
    status = ft("status", cwd=tmp_path)
    assert "0/8" in status.stdout and "--retry-failed" in status.stdout
    detail = ft("status", "broken", cwd=tmp_path)
    assert 'raise ValueError("boom from the recipe")' in detail.stdout
    # keep going runs them all; a second run says how to retry the kept failures
    out = ft("run", str(spec), "--backend", "inline", "--no-report", "--keep-going", cwd=tmp_path)
    assert out.returncode == 1 and "ran 6 trials" in out.stderr
    again = ft("run", str(spec), "--backend", "inline", "--no-report", cwd=tmp_path)
    assert again.returncode == 1
    assert "8 failed or diverged trial(s) from earlier runs" in again.stderr
    assert "--retry-failed" in again.stderr


def test_a_run_where_every_trial_finished_exits_0(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = write_spec(toy_spec(name="fine", seeds=6, arms=NOISY))
    out = ft("run", str(spec), "--backend", "inline", "--no-report", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "not every trial finished" not in out.stderr and "warning" not in out.stderr


# -- 8. bundles carry what the trials ran, and no other experiment's name ------------------------
def test_the_code_snapshot_is_what_the_recipe_imports(tmp_path: Path) -> None:
    from fairtrial import provenance

    (tmp_path / "mine.py").write_text(
        "from helpers import scale\nfrom pkg.sub import thing\n\ndef train(config, ctx):\n"
        "    pass\n"
    )
    (tmp_path / "helpers.py").write_text("import json\nscale = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub.py").write_text("from . import deeper\nthing = 2\n")
    (tmp_path / "pkg" / "deeper.py").write_text("x = 3\n")
    (tmp_path / "unpublished_idea.py").write_text("SECRET_PLAN = True\n")
    snap = provenance.code_snapshot("mine:train", None, tmp_path)
    assert sorted(snap["files"]) == [
        "helpers.py",
        "mine.py",
        "pkg/__init__.py",
        "pkg/deeper.py",
        "pkg/sub.py",
    ]
    before = provenance.code_hash(snap)
    (tmp_path / "unpublished_idea.py").write_text("SECRET_PLAN = False\n")
    assert provenance.code_hash(provenance.code_snapshot("mine:train", None, tmp_path)) == before
    (tmp_path / "pkg" / "deeper.py").write_text("x = 4\n")
    assert provenance.code_hash(provenance.code_snapshot("mine:train", None, tmp_path)) != before


def test_a_bundle_names_no_other_experiment(
    write_spec: Callable[..., Path], ledger: Ledger, tmp_path: Path
) -> None:
    from fairtrial.bundle import read_bundle, write_bundle

    (tmp_path / "unpublished_idea.py").write_text("SECRET_PLAN = True\n")
    run(write_spec(toy_spec(name="secret-other", seeds=2, arms=NOISY), "other.toml"), ledger)
    summary, _ = run(write_spec(toy_spec(name="published", seeds=2, arms=NOISY)), ledger)
    # the second experiment reused the first one's trials, so make it look again
    summary, _ = run(
        write_spec(toy_spec(name="published", seeds=2, arms="[arms.noisy]\nnoise = 0.2\n")),
        ledger,
    )
    exp = ledger.experiment(summary.experiment_id)
    path = tmp_path / "b.tar.gz"
    write_bundle(ledger, exp, path)
    with read_bundle(path) as b:
        names = list(b.manifest["files"])
        text = "".join(b.read_bytes(n).decode(errors="replace") for n in names)
        log = b.json("testlog.json")
    assert not any("unpublished_idea" in n for n in names)
    assert "secret-other" not in text
    assert log["summary"]["other_experiments"] == 1
    assert json.dumps(log).count("secret-other") == 0


def test_code_edited_during_a_run_is_said_and_fails_the_run(
    write_spec: Callable[..., Path], ledger: Ledger, tmp_path: Path
) -> None:
    # a recipe whose file changes while the run goes on (an editor saving mid-run)
    (tmp_path / "editing.py").write_text(
        "from pathlib import Path\n\nfrom toy import probe\n\n\n"
        "def train(config, ctx):\n"
        "    probe(config, ctx)\n"
        "    if ctx.seed == 0:\n"
        "        with open(__file__, 'a') as fh:\n"
        "            fh.write('# saved again\\n')\n"
    )
    spec = write_spec(toy_spec(seeds=2).replace('recipe = "toy:probe"', 'recipe = "editing:train"'))
    summary, _ = run(spec, ledger)
    assert summary.finished == 2 and not summary.complete
    assert summary.stopped is not None and "changed while the run went on" in summary.stopped
    # the next run re-runs every trial on the code as it is now
    assert run(spec, ledger)[0].ran == 2


def test_an_auto_plan_that_asks_for_fewer_seeds_drops_the_others(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    from fairtrial.plan import plan_trials

    spec = load_spec(write_spec(toy_spec(seeds=8, arms=NOISY)))
    ledger.upsert_experiment(
        experiment_id=spec.experiment_id, name=spec.name, spec_hash=spec.spec_hash,
        spec=spec.normalized(), arms=spec.arm_table(), spec_path=None, task=spec.task,
        task_checksum=spec.task_checksum, metric=spec.metric, direction=spec.direction,
        seeds=spec.seeds, root_seed=spec.root_seed,
    )  # fmt: skip
    ledger.add_trials(plan_trials(spec, "old code"))
    # new code: the pilot re-points seeds 0-4; a plan of 6 seeds must not keep 6 and 7 of the
    # old code in the verdict
    new = [p for p in plan_trials(spec, "new code") if p.seed < 6]
    ledger.add_trials(new)
    assert ledger.trim_slots(spec.experiment_id, 6) == 4
    trials = ledger.trials(spec.experiment_id)
    assert {t.seed for t in trials} == set(range(6))
    assert {t.code_hash for t in trials} == {"new code"}
