"""Recipes that evaluate themselves (``task = "external:NAME"``): real runs on real stores.

A Python recipe calls ``ctx.report_test``; a command prints ``{"test": {...}}``. The results
are analysed as any experiment's, recorded in the sealed test log as the recipe's evaluations,
labelled in every report format and the JSON, bundled, verified and replicated; nothing is
re-scored, and bad input (spec or recipe) gets one clear reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fairtrial import testlog
from fairtrial.analysis.document import analyze
from fairtrial.backends import InlineBackend
from fairtrial.bundle import read_bundle, verify_bundle, write_bundle
from fairtrial.errors import BundleError, SpecError
from fairtrial.ledger import Ledger
from fairtrial.report import render_html, render_md, render_tex, render_text
from fairtrial.rescore import rescore
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
LABEL = "Evaluated by the recipe, not sealed"

#: a recipe whose score comes from data fairtrial never sees; ``mode`` picks how it reports
RECIPE = """
import math


def train(config, ctx):
    mode = config["mode"]
    assert len(ctx.data.x_train) == 0  # fairtrial holds none of this task's data
    acc = 0.80 + config["bonus"] + 0.02 * float(ctx.rng("init").random())
    ctx.log(step=0, val_accuracy=acc - 0.01)
    if mode == "ok":
        ctx.report_test(accuracy=acc, loss=1.0 - acc)
    elif mode == "twice":
        ctx.report_test(accuracy=acc)
        ctx.report_test(accuracy=acc)
    elif mode == "missing":
        ctx.report_test(loss=0.2)
    elif mode == "nan":
        ctx.report_test(accuracy=math.nan)
    elif mode == "evaluate":
        ctx.evaluate_test(lambda x: [0] * len(x))
"""

SPEC = """
[experiment]
name = "{name}"
task = "external:own-images"
recipe = "ext_recipe:train"
metric = "accuracy"
direction = "max"
seeds = {seeds}

[hypothesis]
smallest_effect = 0.01

[baseline]
bonus = 0.0
mode = "ok"

{arms}
"""


def _spec(tmp_path: Path, name: str, arms: str, seeds: int = 6) -> Path:
    (tmp_path / "ext_recipe.py").write_text(RECIPE)
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, seeds=seeds, arms=textwrap.dedent(arms)))
    return path


def _text(doc: Any) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_text(doc))
    return console.export_text()


def test_python_recipe_reports_its_score_labelled_everywhere(
    ledger: Ledger, tmp_path: Path
) -> None:
    spec = load_spec(_spec(tmp_path, "ext-py", "[arms.better]\nbonus = 0.05\n"))
    # the direction is part of an external experiment's identity, and only of one
    assert spec.normalized()["experiment"]["direction"] == "max" and spec.direction == "max"
    run_experiment(spec, ledger, InlineBackend(), show_progress=False)
    exp = ledger.experiment(spec.experiment_id)
    trials = ledger.trials(exp.id)
    assert [t.status for t in trials] == ["finished"] * 12

    # every trial's reported score is its result and one entry of the sealed test log
    evaluations = {e["trial_id"]: e for e in ledger.test_evaluations(exp.id)}
    for t in trials:
        reported = evaluations[t.id]["predictions"]
        assert reported["evaluation"] == "recipe" and evaluations[t.id]["n"] == 0
        assert reported["metrics"]["accuracy"] == t.result
        assert reported["metrics"]["loss"] == pytest.approx(1.0 - t.result)
    summary = testlog.summary(ledger, exp)
    assert summary["evaluations"] == 12 and summary["chain_ok"], summary

    doc = analyze(ledger, exp)
    assert doc.comparisons[0].verdict == "better" and doc.arms["better"].n == 6
    assert not any(a.seed_blind for a in doc.arms.values())
    assert doc.to_dict()["experiment"]["evaluation"] == "recipe"
    # near the top of every format, in plain words: above the verdicts (LaTeX: its first
    # comment, and the table's caption)
    for text in (_text(doc), render_md(doc), render_html(doc)):
        assert LABEL in text and text.index(LABEL) < text.index("Verdicts"), text[:400]
    tex = render_tex(doc)
    assert tex.splitlines()[1].startswith(f"% {LABEL}") and f"\\caption{{{LABEL}" in tex

    # the bundle verifies; nothing can be re-scored, and verify says so
    bundle = tmp_path / "ext.tar.gz"
    write_bundle(ledger, exp, bundle)
    with read_bundle(bundle) as b:
        bexp, btrials = b.experiment(), b.trials()
        preds = b.json("results/predictions.json")
        assert b.json("results/analysis.json")["experiment"]["evaluation"] == "recipe"
    checked = rescore(bexp, btrials, preds)
    assert not checked.verified and "evaluated by the recipe" in str(checked.reason)
    # a result that is not the score its recipe reported is refused, not "re-scored"
    first = next(iter(preds))
    forged = {**preds, first: {**preds[first], "predictions": {
        "evaluation": "recipe", "metrics": {"accuracy": 0.123}}}}  # fmt: skip
    with pytest.raises(BundleError, match=r"but its recipe reported 0\.123 \(edited\)"):
        rescore(bexp, btrials, forged)
    verified = verify_bundle(bundle)["results"]
    assert verified["verified"] is False and verified["unverifiable"].startswith(
        "task 'external:own-images' was evaluated by the recipe on data fairtrial never held"
    )


def test_replication_of_a_recipe_evaluated_bundle(tmp_path: Path) -> None:
    from fairtrial.replicate import replicate

    led = Ledger(tmp_path / "ledger.db")
    spec = load_spec(_spec(tmp_path, "ext-rep", "[arms.better]\nbonus = 0.05\n", seeds=4))
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    write_bundle(led, led.experiment(spec.experiment_id), tmp_path / "b.tar.gz")
    led.close()
    record = replicate(
        tmp_path / "b.tar.gz",
        store=tmp_path / "replications.db",
        folder=tmp_path / "replication",
        backend=InlineBackend(),
        show_progress=False,
    )
    assert record["outcome"] == "replicated", record


def test_recipe_mistakes_fail_the_trial_with_one_reason(tmp_path: Path) -> None:
    arms = "".join(
        f'[arms.{m}]\nmode = "{m}"\n' for m in ("twice", "missing", "nan", "evaluate", "none")
    )
    spec = load_spec(_spec(tmp_path, "ext-bad", arms, seeds=2))
    led = Ledger(tmp_path / "ledger.db")
    run_experiment(spec, led, InlineBackend(), show_progress=False, keep_going=True)
    errors = {t.arm: t.error or "" for t in led.trials(spec.experiment_id) if t.seed == 0}
    assert errors["baseline"] == ""
    assert (
        "RecipeError: ctx.report_test: a second test report; a trial reports its test "
        in (errors["twice"])
    )
    assert errors["missing"] == (
        "RecipeError: ctx.report_test: the spec's metric 'accuracy' is missing (got: loss); "
        "report it: ctx.report_test(accuracy=value)"
    )
    assert errors["nan"] == (
        "RecipeError: ctx.report_test: metric 'accuracy' is nan; a reported test score is a "
        "finite number"
    )
    assert errors["evaluate"].startswith(
        "RecipeError: ctx.evaluate_test: task 'external:own-images' is evaluated by the recipe"
    ) and errors["evaluate"].endswith("ctx.report_test(accuracy=...)")
    assert errors["none"] == (
        "the recipe never called ctx.report_test(accuracy=...): on task 'external:own-images' "
        "a trial's result is the test score it reports"
    )
    assert all("\n" not in e for e in errors.values())
    # a twice-reported trial looked at its test data once: one entry in the sealed log
    twice = [t.id for t in led.trials(spec.experiment_id) if t.arm == "twice"]
    assert sum(e["trial_id"] in twice for e in led.test_log()) == 2
    led.close()


def test_report_test_on_a_sealed_task_is_refused(write_spec: Any, tmp_path: Path) -> None:
    (tmp_path / "sealed.py").write_text(
        "def train(config, ctx):\n    ctx.report_test(accuracy=1.0)\n"
    )
    spec = load_spec(write_spec("""
        [experiment]
        name = "sealed-report"
        task = "iris"
        recipe = "sealed:train"
        seeds = 2
        [baseline]
        a = 1
        """))  # fmt: skip
    led = Ledger(tmp_path / "ledger.db")
    run_experiment(spec, led, InlineBackend(), show_progress=False, keep_going=True)
    t = next(t for t in led.trials(spec.experiment_id) if t.seed == 0)
    assert t.status == "failed" and t.error == (
        "RecipeError: ctx.report_test: task 'iris' is scored by fairtrial on its sealed test "
        "split (ctx.evaluate_test, or a command's predictions file); reporting a test score is "
        'for task = "external:NAME"'
    )
    led.close()


#: a command that evaluates itself; the first argument picks how it reports
COMMAND = """
import json, os, random, sys
mode, bonus = sys.argv[1], float(sys.argv[2])
assert "FAIRTRIAL_DATA_DIR" not in os.environ and "FAIRTRIAL_PREDICTIONS" not in os.environ
acc = 0.7 + bonus + 0.02 * random.Random(int(os.environ["FAIRTRIAL_SEED_INIT"])).random()
for step in range(3):
    print(json.dumps({"step": step, "val_accuracy": acc - 0.01 * (3 - step)}))
if mode == "ok":
    print(json.dumps({"test": {"accuracy": acc, "f1": acc - 0.1}}))
elif mode == "scalar":
    print(json.dumps({"test": acc}))
"""

SPEC_CMD = """
[experiment]
name = "{name}"
task = "external:own-corpus"
command = "python3 own_eval.py {{mode}} {{bonus}}"
metric = "accuracy"
direction = "max"
seeds = {seeds}
[baseline]
bonus = 0.0
mode = "ok"
{arms}
"""


def test_command_recipe_prints_its_test_line(tmp_path: Path) -> None:
    (tmp_path / "own_eval.py").write_text(COMMAND)

    def write(name: str, seeds: int, arms: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(SPEC_CMD.format(name=name, seeds=seeds, arms=arms))
        return path

    led = Ledger(tmp_path / "ledger.db")
    arms = '[arms.silent]\nmode = "none"\n[arms.scalar]\nmode = "scalar"'
    bad = load_spec(write("ext-cmd-bad", 2, arms))
    run_experiment(bad, led, InlineBackend(), show_progress=False, keep_going=True)
    errors = {t.arm: t.error for t in led.trials(bad.experiment_id) if t.seed == 0}
    assert errors["silent"] == (
        "RecipeError: command printed no test line: on task 'external:own-corpus' it evaluates "
        'itself and prints one JSON line {"test": {"accuracy": value}} on stdout'
    )
    assert errors["scalar"].startswith("RecipeError: the command's test line holds 0.7")
    assert errors["scalar"].endswith('it must be an object: {"test": {"accuracy": value}}')
    spec = load_spec(write("ext-cmd", 6, "[arms.better]\nbonus = 0.05"))
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    exp = led.experiment(spec.experiment_id)
    doc = analyze(led, exp)
    better = next(c for c in doc.comparisons if c.arm == "better")
    assert better.verdict == "better" and doc.experiment.evaluation == "recipe"
    # the extra metric is kept with the evaluation; the metric lines are the learning curve
    (ev, *_) = led.test_evaluations(exp.id)
    assert set(ev["predictions"]["metrics"]) == {"accuracy", "f1"}
    t0 = next(t for t in led.trials(exp.id) if t.arm == "baseline")
    assert [p[3] for p in led.metrics(t0.id)].count("val_accuracy") == 3
    led.close()


def _refused(text: str) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec(textwrap.dedent(text))
    return str(err.value)


EXPERIMENT = """
[experiment]
name = "x"
task = "{task}"
command = "{command}"
seeds = 2
{extra}
[baseline]
a = 1
"""


@pytest.mark.parametrize(
    ("task", "extra", "command", "needles"),
    [
        ("external:a", 'metric = "accuracy"', "python3 t.py",
         ["[experiment]: missing required key 'direction' for task = \"external:a\"",
          'direction = "max" or "min"']),
        ("external:a", 'direction = "min"', "python3 t.py",
         ["missing required key 'metric' for task = \"external:a\""]),
        ("iris", 'direction = "max"', "python3 t.py",
         ['[experiment] direction = "max": only for task = "external:NAME": metric '
          "'accuracy' of task 'iris' fixes it (higher is better); remove the key"]),
        ("external:a", 'metric = "acc"\ndirection = "up"', "python3 t.py",
         ['direction = "up": must be "max" (higher is better) or "min"']),
        ("external:a", 'metric = "top-1"\ndirection = "max"', "python3 t.py",
         ['metric = "top-1": an external task\'s metric is a name']),
        ("external:no/slash", 'metric = "acc"\ndirection = "max"', "python3 t.py",
         ["the name after 'external:' must be up to 100 letters"]),
        ("external:a", 'metric = "acc"\ndirection = "max"', "python3 t.py {predictions}",
         ['{predictions}: task "external:a" has no data folder and no predictions file']),
    ],
)  # fmt: skip
def test_spec_mistakes_are_one_line(
    task: str, extra: str, command: str, needles: list[str]
) -> None:
    message = _refused(EXPERIMENT.format(task=task, extra=extra, command=command))
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_direction_only_in_an_external_identity() -> None:
    """Experiments on built-in tasks keep their ids: no direction in their normalised spec."""

    def spec(task: str, extra: str) -> Any:
        return parse_spec(textwrap.dedent(EXPERIMENT.format(task=task, extra=extra, command="x")))

    assert "direction" not in spec("iris", "").normalized()["experiment"]
    own = spec("external:a", 'metric = "loss"\ndirection = "min"')
    assert own.normalized()["experiment"]["direction"] == "min" and own.direction == "min"
    # the data of an external task are its name's: other metrics looked at the same test split
    assert own.task_checksum == spec("external:a", 'metric = "l2"\ndirection = "min"').task_checksum


def test_the_example_script_prints_its_two_lines(tmp_path: Path) -> None:
    import importlib.util

    # found, not imported: the script imports torch itself, in its own process
    if not all(importlib.util.find_spec(m) for m in ("torch", "sklearn")):
        pytest.skip("the example needs torch and scikit-learn")
    folder = ROOT / "examples" / "external"
    spec = load_spec(folder / "spec.toml")
    assert spec.task.startswith("external:") and spec.direction == "max"
    out = subprocess.run(
        [sys.executable, "train.py", "--lr", "0.02", "--epochs", "2", "--seed", "3"],
        cwd=folder, capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "FAIRTRIAL_SEED_DATA": "7"},
    )  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [p["step"] for p in lines[:-1]] == [0, 1]
    assert 0.5 < lines[-1]["test"]["accuracy"] <= 1.0, lines
