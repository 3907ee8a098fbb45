"""``fairtrial run --mirror mlflow`` and ``fairtrial export --to mlflow`` on a real experiment.

One real run (the toy probe on digits, inline: 3 arms × 7 seeds, one arm failing) is mirrored
live to one MLflow file store; the same ledger is then exported to a second, fresh store and
read back by ``fairtrial analyze`` (the import path), which must give fairtrial's own per-seed
results and verdict. A mirror whose tracker is unreachable, or breaks mid-run, costs the run
nothing but one warning line.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import sys
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairtrial.cli import main
from fairtrial.exports import mlflowkit as kit
from fairtrial.exports.trials import with_steps
from fairtrial.ledger import Ledger

pytest.importorskip("mlflow")

RECIPES = Path(__file__).parent / "recipes"
SEEDS = 7
SPEC = """
[experiment]
name = "{name}"
task = "digits"
recipe = "toy:probe"
seeds = {seeds}

[hypothesis]
smallest_effect = 0.01

[baseline]
noise = 0.0
mode = "ok"
sleep = 0.0

[arms.noisy]
noise = 3.0
{more}
"""
BROKEN = """
[arms.broken]
mode = "raise"
"""
#: a recipe that breaks the MLflow file store under the mirror halfway through the run, once
#: the mirror has made its first runs there
BREAKER = """
import time
from pathlib import Path

import numpy as np


def train(config, ctx):
    for step in range(3):
        ctx.log(step=step, val_accuracy=0.5 + 0.1 * step)
    if ctx.seed == 1 and config["break_store"]:
        store = Path(config["break_store"])
        deadline = time.monotonic() + 60
        while not list(store.glob("*/*/meta.yaml")) and time.monotonic() < deadline:
            time.sleep(0.05)
        # moved away in one step (the mirror may be writing into it right now), then a file
        # where the folder was: every later write of the mirror fails (the mirror may make
        # the folder again in between: then it is moved away again)
        for attempt in range(100):
            try:
                store.rename(store.with_name(f"gone{attempt}"))
            except FileNotFoundError:
                pass
            try:
                store.write_text("no longer a folder")
                break
            except IsADirectoryError:
                continue
    ctx.evaluate_test(lambda xs: np.zeros(len(xs), dtype=int))
"""


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cli_err(*args: str) -> tuple[int, str]:
    """The exit status and stderr of a command run here (for module-scoped fixtures, which
    have no capsys)."""
    buf = io.StringIO()
    with redirect_stderr(buf):
        code = cli(*args)
    return code, buf.getvalue()


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Experiment:
    """The shared run: its folder, ledger, the mirrored store and the exported one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = str(root / "ledger.db")
        self.mirrored = f"file:{root / 'mirrored'}"
        self.exported = f"file:{root / 'exported'}"
        self.run_err = ""
        self.export_err = ""

    def ledger(self) -> Ledger:
        return Ledger(self.db)

    def client(self, uri: str) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Experiment]:
    root = tmp_path_factory.mktemp("export20")
    shutil.copy(RECIPES / "toy.py", root / "toy.py")
    (root / "spec.toml").write_text(SPEC.format(name="toy-export", seeds=SEEDS, more=BROKEN))
    exp = Experiment(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks before a new file store
        mp.chdir(root)
        code, exp.run_err = cli_err("run", "spec.toml", "--backend", "inline", "--store", exp.db,
                                    "--no-report", "--mirror", "mlflow",
                                    "--tracking-uri", exp.mirrored)  # fmt: skip
        assert code == 1, exp.run_err  # the broken arm's trials failed: exit 1, as always
        code, exp.export_err = cli_err("export", "toy-export", "--to", "mlflow", "--store",
                                       exp.db, "--tracking-uri", exp.exported)  # fmt: skip
        assert code == 0, exp.export_err
        yield exp


def _trial_runs(client: Any, name: str) -> dict[tuple[str, int], Any]:
    mexp = client.get_experiment_by_name(name).experiment_id
    return kit.trial_runs(client, mexp)


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _ledger_series(led: Ledger, trial: Any) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for _, step, _, name, value in led.metrics(trial.id, trial.attempt):
        out.setdefault(name, []).append((step, value))
    return out


def test_the_mirror_made_each_trials_run_live_with_the_ledgers_metrics(
    experiment: Experiment,
) -> None:
    client = experiment.client(experiment.mirrored)
    runs = _trial_runs(client, "toy-export")
    led = experiment.ledger()
    trials = led.trials(led.find_experiment("toy-export").id)
    assert len(trials) == 3 * SEEDS and len(runs) == len(trials)
    (line,) = [ln for ln in experiment.run_err.splitlines() if "mirror" in ln]
    assert line.startswith(f"mirrored {len(trials)} trial run(s) (") and line.endswith(
        f"to MLflow experiment 'toy-export' at {experiment.mirrored}; `fairtrial export "
        "toy-export --to mlflow` adds the verdicts and the report"
    )
    arms = kit.arm_runs(client, client.get_experiment_by_name("toy-export").experiment_id)
    assert set(arms) == {(None, "baseline"), (None, "noisy"), (None, "broken")}
    for t in trials:
        run = runs[t.id, t.attempt]
        tags, params = run.data.tags, run.data.params
        assert run.info.status == ("FINISHED" if t.status == "finished" else "FAILED")
        assert tags[kit.PARENT] == arms[None, t.arm]
        assert (tags[kit.ARM], tags["fairtrial.seed"], tags["fairtrial.status"]) == (
            t.arm, str(t.seed), t.status,
        )  # fmt: skip
        assert params["arm"] == t.arm and params["seed"] == str(t.seed)
        assert {k: int(v) for k, v in params.items() if k.startswith("seed_")} == {
            f"seed_{k}": v for k, v in t.seeds.items()
        }
        assert params["noise"] == json.dumps(t.config["noise"])
        for name, series in _ledger_series(led, t).items():
            assert _history(client, run.info.run_id, name) == series, (t.arm, t.seed, name)
        result = _history(client, run.info.run_id, "accuracy")
        assert result == ([(1, t.result)] if t.result is not None else [])
        if t.status == "failed":
            assert tags["fairtrial.error"] == t.error
    led.close()


def test_export_then_analyze_gives_fairtrials_own_results_and_verdict(
    experiment: Experiment, capsys: pytest.CaptureFixture[str]
) -> None:
    from fairtrial.api import analyze

    line = experiment.export_err.strip()
    target = f"MLflow experiment 'toy-export' at {experiment.exported}"
    assert line.startswith(f"exported 'toy-export' to {target} in ") and "\n" not in line
    assert f": {3 * SEEDS} trial run(s) made (" in line
    own = analyze("toy-export", experiment.db)
    capsys.readouterr()
    code = cli("analyze", "mlflow:toy-export", "--tracking-uri", experiment.exported,
               "--metric", "accuracy", "--arm-param", "arm", "--baseline", "arm=baseline",
               "--smallest-effect", "0.01", "--format", "json")  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    back = json.loads(out.out)
    # the failed arm's runs are FAILED: the import leaves them out, as fairtrial drops them
    # (the import calls its baseline "baseline")
    assert set(back["arms"]) == {"baseline", "arm=noisy"}
    for arm, name in (("baseline", "baseline"), ("noisy", "arm=noisy")):
        mine, theirs = own.arms[arm], back["arms"][name]
        assert dict(zip(theirs["seeds"], theirs["values"], strict=True)) == dict(
            zip(mine.seeds, mine.values, strict=True)
        )
    (mine_c,) = [c for c in own.comparisons if c.arm == "noisy"]
    (theirs_c,) = back["comparisons"]
    assert theirs_c["verdict"] == mine_c.verdict == "worse"
    assert theirs_c["effect"] == pytest.approx(mine_c.effect)
    assert theirs_c["p"] == pytest.approx(mine_c.p)


def test_the_export_puts_verdicts_on_the_runs_and_the_report_beside_them(
    experiment: Experiment,
) -> None:
    client = experiment.client(experiment.exported)
    mexp = client.get_experiment_by_name("toy-export")
    assert mexp.tags[kit.EXPERIMENT] == experiment.ledger().find_experiment("toy-export").id
    verdict = {"baseline": "baseline", "noisy": "worse", "broken": "inconclusive"}
    for run in _trial_runs(client, "toy-export").values():
        assert run.data.tags["fairtrial.verdict"] == verdict[run.data.tags[kit.ARM]]
    for (_, arm), run_id in kit.arm_runs(client, mexp.experiment_id).items():
        parent = client.get_run(run_id)
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["fairtrial.verdict"] == verdict[arm]
        assert not parent.data.metrics, "only trial runs carry the metric: analyze reads them"
    (report,) = kit.runs(client, mexp.experiment_id, "report")
    files = {f.path for f in client.list_artifacts(report.info.run_id)}
    assert files == {"report.md", "report.html", "results.json"}
    local = Path(client.download_artifacts(report.info.run_id, "results.json"))
    results = json.loads(local.read_text())
    assert results["experiment"]["name"] == "toy-export"
    assert json.loads(report.data.tags["fairtrial.verdicts"])["noisy vs baseline"] == "worse"


def test_exporting_again_makes_no_new_run_and_finds_the_mirrors_runs(
    experiment: Experiment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for uri in (experiment.exported, experiment.mirrored):
        client = experiment.client(uri)
        before = _trial_runs(client, "toy-export")
        assert cli("export", "toy-export", "--to", "mlflow", "--store", experiment.db,
                   "--tracking-uri", uri) == 0  # fmt: skip
        err = capsys.readouterr().err
        assert f": 0 trial run(s) made, {3 * SEEDS} already there (0 points)" in err, err
        after = _trial_runs(client, "toy-export")
        assert {k: r.info.run_id for k, r in after.items()} == {
            k: r.info.run_id for k, r in before.items()
        }
        # the mirror's runs now carry the verdicts too
        assert {r.data.tags["fairtrial.verdict"] for r in after.values()} == {
            "baseline", "worse", "inconclusive",
        }  # fmt: skip
        mexp = client.get_experiment_by_name("toy-export").experiment_id
        assert (
            len(kit.runs(client, mexp, "arm")) == 3 and len(kit.runs(client, mexp, "report")) == 1
        )


def test_a_run_left_unfinished_is_replaced(
    experiment: Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fairtrial.api import find_experiment
    from fairtrial.exports import mlflow as export

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    led = experiment.ledger()
    exp = find_experiment(led, "toy-export")
    trial = led.trials(exp.id)[0]
    # what a mirror that stopped mid-trial leaves: the trial's run, never ended
    client = experiment.client(uri)
    mexp, _ = kit.experiment(client, exp.name, exp.id)
    tags = kit.trial_tags(exp.id, trial.id, trial.attempt, trial.arm, trial.seed, "running")
    left = client.create_run(mexp, tags=tags)
    monkeypatch.setattr(export, "STALE_SECONDS", 0.0)
    done = export.export_mlflow(led, exp, tracking_uri=uri)
    assert (done.made, done.already, done.replaced) == (3 * SEEDS, 0, 1)
    assert client.get_run(left.info.run_id).info.lifecycle_stage == "deleted"
    runs = _trial_runs(client, exp.name)
    assert runs[trial.id, trial.attempt].info.status == "FINISHED"
    led.close()


def _run_err(root: Path, spec: str, uri: str) -> tuple[int, str]:
    return cli_err("run", str(root / spec), "--backend", "inline", "--store",
                   str(root / "ledger.db"), "--no-report", "--mirror", "mlflow",
                   "--tracking-uri", uri)  # fmt: skip


def test_an_unreachable_tracker_costs_the_run_one_warning_line(tmp_path: Path) -> None:
    shutil.copy(RECIPES / "toy.py", tmp_path / "toy.py")
    (tmp_path / "spec.toml").write_text(SPEC.format(name="away", seeds=2, more=""))
    uri = f"http://127.0.0.1:{free_port()}"
    code, err = _run_err(tmp_path, "spec.toml", uri)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "mirror" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: the MLflow mirror stopped: MLflow at {uri} cannot be reached: "
    ), err
    assert "Connection refused" in warnings[0] and "Traceback" not in err
    assert warnings[0].endswith("(`fairtrial export away --to mlflow` sends it later)")
    led = Ledger(tmp_path / "ledger.db")
    trials = led.trials(led.find_experiment("away").id)
    assert [t.status for t in trials] == ["finished"] * 4
    assert all(led.metrics(t.id) for t in trials)
    led.close()


def test_a_tracker_that_breaks_mid_run_costs_the_run_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    (tmp_path / "breaker.py").write_text(textwrap.dedent(BREAKER))
    (tmp_path / "spec.toml").write_text(
        f'[experiment]\nname = "breaks"\ntask = "digits"\nrecipe = "breaker:train"\nseeds = 3\n'
        f'deterministic = true\n[baseline]\nbreak_store = "{store}"\n'
        '[arms.other]\nbreak_store = ""\n'
    )
    code, err = _run_err(tmp_path, "spec.toml", f"file:{store}")
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "mirror" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: the MLflow mirror stopped: MLflow at file:{store}: "
    ), err
    led = Ledger(tmp_path / "ledger.db")
    trials = led.trials(led.find_experiment("breaks").id)
    assert [t.status for t in trials] == ["finished"] * 6
    assert all(len(led.metrics(t.id)) == 3 for t in trials), "the ledger lost nothing"
    led.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--to", "mlflow"], "error: no experiment 'nope' in "),
        (["toy-export", "--to", "mlflow", "--dir", "x"],
         "error: --dir and --project are for --to wandb, not --to mlflow"),
        (["toy-export", "--to", "wandb", "--tracking-uri", "x"],
         "error: --tracking-uri is for --to mlflow, not --to wandb"),
    ],
)  # fmt: skip
def test_export_mistakes_are_one_line(
    experiment: Experiment,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert cli("export", *args, "--store", experiment.db) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_tracking_uri_without_a_mirror_is_one_line(
    experiment: Experiment, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(experiment.root / "spec.toml")
    assert cli("run", spec, "--store", experiment.db, "--tracking-uri", "file:x") == 2
    err = capsys.readouterr().err
    assert err == "error: --tracking-uri is for --mirror mlflow\n"


def test_an_unreachable_tracker_is_one_line_for_export(
    experiment: Experiment, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    assert cli("export", "toy-export", "--to", "mlflow", "--store", experiment.db,
               "--tracking-uri", uri) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith(f"error: MLflow at {uri} cannot be reached: ") and err.count("\n") == 1
    assert "Connection refused" in err


def test_without_mlflow_export_and_mirror_name_the_extra(
    experiment: Experiment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert cli("export", "toy-export", "--to", "mlflow", "--store", experiment.db) == 2
    err = capsys.readouterr().err
    assert "error: Exporting to MLflow needs the 'mlflow' package:" in err and "[mlflow]" in err
    assert err.count("\n") == 1
    code = cli("run", str(experiment.root / "spec.toml"), "--store", experiment.db,
               "--mirror", "mlflow")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "error: Mirroring a run to MLflow needs the 'mlflow' package:" in err
    assert "Traceback" not in err


# -- pure parts --------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(0, 3500), st.integers(0, 350), st.integers(0, 350))
def test_batches_keep_to_mlflows_limits_and_lose_nothing(m: int, p: int, t: int) -> None:
    metrics, params, tags = list(range(m)), [f"p{i}" for i in range(p)], [f"t{i}" for i in range(t)]
    got = list(kit.batches(metrics, params, tags))
    for bm, bp, bt in got:
        assert len(bm) <= 1000 and len(bp) <= 100 and len(bt) <= 100
        assert 0 < len(bm) + len(bp) + len(bt) <= 1000
    assert [x for b in got for x in b[0]] == metrics
    assert [x for b in got for x in b[1]] == params
    assert [x for b in got for x in b[2]] == tags
    # every call but the last is full in one of the limits: as few calls as they allow
    for bm, bp, bt in got[:-1]:
        assert 100 in (len(bp), len(bt)) or len(bm) + len(bp) + len(bt) == 1000


def test_points_without_a_step_are_numbered_per_metric_across_batches() -> None:
    counters: dict[str, int] = {}
    first = with_steps([(None, 0.1, "loss", 1.0), (None, 0.2, "acc", 0.5), (7, 0.3, "loss", 2)],
                       counters)  # fmt: skip
    second = with_steps([(None, 0.4, "loss", None)], counters)
    assert first == [(0, 0.1, "loss", 1.0), (0, 0.2, "acc", 0.5), (7, 0.3, "loss", 2.0)]
    assert second[0][:3] == (1, 0.4, "loss") and second[0][3] != second[0][3]  # NaN


def test_keys_mlflow_refuses_are_made_valid() -> None:
    assert kit.key_of("val/acc top-1") == "val/acc top-1"
    assert kit.key_of("a:b@c") == "a_b_c"
    assert kit.key_of("../x") == "_.._x"
    assert kit.key_of("") == "_"
