"""Hostile spec inputs, through the real CLI: each is refused when the spec loads, before any
trial runs, with one line that names the field and what would be valid; exit 2, no traceback.

Most cases call the CLI's entry point in this process (``fairtrial.cli.main``, what the
``fairtrial`` script runs); the spec files that could hang or fill memory run it in a
subprocess with a timeout, so a regression fails instead of stopping the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fairtrial.cli import main
from fairtrial.spec import MAX_ARMS, MAX_CONFIG_VALUES, MAX_SPEC_BYTES, MAX_TRIALS

EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"

HEAD = '[experiment]\nname = "hostile"\ntask = "digits"\nrecipe = "toy:probe"\n'
GOOD = HEAD + "seeds = 3\n\n[baseline]\nnoise = 0.0\n\n[arms.noisy]\nnoise = 0.5\n"


def spec(
    seeds: str = "3",
    experiment: str = "",
    baseline: str = "noise = 0.0",
    arms: str = "[arms.noisy]\nnoise = 0.5",
    tail: str = "",
    task: str = "digits",
    recipe: str = '"toy:probe"',
) -> str:
    """A spec on the toy recipe with one part replaced."""
    return (
        f'[experiment]\nname = "hostile"\ntask = "{task}"\nrecipe = {recipe}\n'
        f"seeds = {seeds}\n{experiment}\n\n[baseline]\n{baseline}\n\n{arms}\n{tail}"
    )


def builtin(recipe: str, baseline: str, arms: str = "", task: str = "digits") -> str:
    return spec(recipe=f'"{recipe}"', baseline=baseline, arms=arms, task=task)


def command(line: str) -> str:
    return spec(recipe="", experiment=f"command = {line}").replace("recipe = \n", "")


#: modules written beside the spec: a helper that is no recipe, a class, a constant, a task
#: factory that raises, a module that exits on import
MODULES = {
    "helpers.py": (
        "def helper(x):\n    return x\n\n"
        "class Trainer:\n    def __init__(self, config, ctx):\n        pass\n\n"
        "SETTING = 3\n\n"
        "def make_task():\n    raise RuntimeError('no data today')\n"
    ),
    "exits.py": "import sys\nsys.exit(3)\n",
}

# (id, spec text, what the one line must name)
CASES: list[tuple[str, str, list[str]]] = [
    # the TOML parser recurses once per nested table: RecursionError before
    (
        "500-nested-tables",
        spec(baseline="x = " + "{a = " * 500 + "1" + "}" * 500),
        ["invalid TOML", "nested too deeply", "at most 32"],
    ),
    ("nested-lists", spec(baseline="x = " + "[" * 100 + "]" * 100), ["[baseline] x", "32"]),
    # a TOML date or time, wherever a value is read
    (
        "date-as-root_seed",
        spec(experiment="root_seed = 1979-05-27"),
        ["[experiment] root_seed = 1979-05-27", "date", "from 0 to 2147483647"],
    ),
    (
        "datetime-in-baseline",
        spec(baseline="when = 1979-05-27T07:32:00Z"),
        ["[baseline] when", "date or time", '"1979-05-27"'],
    ),
    (
        "time-in-arm",
        spec(baseline="at = 'noon'", arms="[arms.late]\nat = 07:32:00"),
        ["[arms.late] at = 07:32:00", "date or time"],
    ),
    (
        "date-in-hypothesis",
        spec(tail="[hypothesis]\nclaim = 2024-01-01"),
        ["[hypothesis] claim", "date", "a string"],
    ),
    (
        "date-in-list",
        spec(baseline="days = [1979-05-27]"),
        ["[baseline] days", "date or time"],
    ),
    # int() and isdigit() take Unicode digits
    (
        "task-draw-superscript-digit",
        spec(task="mnist1d@²"),
        ["[experiment] task", "mnist1d@\\u00b2", "whole number from 0 to 2147483647"],
    ),
    (
        "task-draw-arabic-digit",
        spec(task="mnist1d@٣"),
        ["[experiment] task", "whole number from 0 to"],
    ),
    ("task-draw-huge", spec(task="mnist1d@" + "9" * 30), ["[experiment] task", "whole number"]),
    # limits of the experiment's numbers
    ("seeds-a-billion", spec(seeds="1000000000"), ["[experiment] seeds", "at most 1000"]),
    (
        "max_seeds-a-billion",
        spec(
            seeds='"auto"',
            experiment="max_seeds = 1000000000",
            tail="[hypothesis]\nsmallest_effect = 0.01",
        ),
        ["[experiment] max_seeds", "at most 1000"],
    ),
    ("seeds-a-string", spec(seeds='"3"'), ["[experiment] seeds", "whole number"]),
    ("time_limit-inf", spec(experiment="time_limit = inf"), ["time_limit = inf", "seconds > 0"]),
    ("time_limit-nan", spec(experiment="time_limit = nan"), ["time_limit = nan", "seconds > 0"]),
    ("time_limit-negative", spec(experiment="time_limit = -5"), ["time_limit = -5", "> 0"]),
    ("time_limit-zero", spec(experiment="time_limit = 0"), ["time_limit = 0", "> 0"]),
    (
        "time_limit-beyond-a-wait",
        spec(experiment="time_limit = 1e9"),
        ["time_limit", "at most 1000000"],
    ),
    ("target-inf", spec(experiment="target = -inf"), ["[experiment] target", "finite"]),
    (
        "smallest_effect-nan",
        spec(tail="[hypothesis]\nsmallest_effect = nan"),
        ["[hypothesis] smallest_effect = nan", "> 0"],
    ),
    (
        "smallest_effect-inf",
        spec(tail="[hypothesis]\nsmallest_effect = inf"),
        ["[hypothesis] smallest_effect = inf", "> 0"],
    ),
    ("alpha-nan", spec(tail="[hypothesis]\nalpha = nan"), ["[hypothesis] alpha", "between 0"]),
    ("pue-inf", spec(tail="[compute]\npue = inf"), ["[compute] pue", ">= 1"]),
    (
        "grid_intensity-nan",
        spec(tail="[compute]\ngrid_intensity = nan"),
        ["[compute] grid_intensity", ">= 0"],
    ),
    (
        "root_seed-2^31",
        spec(experiment="root_seed = 2147483648"),
        ["root_seed = 2147483648", "from 0 to 2147483647"],
    ),
    ("root_seed-negative", spec(experiment="root_seed = -1"), ["root_seed = -1", "from 0"]),
    (
        "max_retries-a-billion",
        spec(experiment="max_retries = 1000000000"),
        ["[experiment] max_retries", "from 0 to 100"],
    ),
    (
        "resources-cpus-nan",
        spec(experiment="resources = {cpus = nan}"),
        ["[experiment] resources", "'cpus' must be a number > 0"],
    ),
    # hyperparameters of the built-in recipes, from their declared ranges
    ("mlp-lr-nan", builtin("mlp", "lr = nan"), ["[baseline] lr = nan", "finite"]),
    ("mlp-lr-zero", builtin("mlp", "lr = 0.0"), ["[baseline] lr", "'lr' must be a number > 0"]),
    (
        "mlp-epochs-negative",
        builtin("mlp", "epochs = -1"),
        ["[baseline] epochs", "from 1 to 100000", "got -1"],
    ),
    (
        "mlp-hidden-zero-in-arm",
        builtin("mlp", "hidden = 16", "[arms.none]\nhidden = 0"),
        ["[arms.none] hidden", "from 1 to 65536", "got 0"],
    ),
    (
        "mlp-hidden-huge",
        builtin("mlp", "hidden = 4611686018427387904"),
        ["[baseline] hidden", "from 1 to 65536"],
    ),
    (
        "mlp-dropout-one",
        builtin("mlp", "dropout = 1.0"),
        ["[baseline] dropout", ">= 0 and < 1"],
    ),
    (
        "mlp-device-unknown",
        builtin("mlp", 'device = "gpu9"'),
        ["[baseline] device", "torch device"],
    ),
    (
        "mlp-epochs-a-string",
        builtin("mlp", 'epochs = "ten"'),
        ["[baseline] epochs", "whole number"],
    ),
    (
        "transformer-heads-do-not-divide",
        builtin("transformer", "n_heads = 3", task="modular_addition"),
        ["[baseline] n_heads", "must divide 'd_model'"],
    ),
    (
        "transformer-one-beta",
        builtin("transformer", "betas = [0.9]", task="modular_addition"),
        ["[baseline] betas", "list of 2 numbers"],
    ),
    ("logistic-C-zero", builtin("logistic", "C = 0"), ["[baseline] C", "> 0"]),
    (
        "gradient_boosting-max_features-zero",
        builtin("gradient_boosting", "max_features = 0.0"),
        ["[baseline] max_features", "> 0 and <= 1"],
    ),
    # command lines shlex cannot split, or that hold nothing
    ("command-empty", command('""'), ['[experiment] command = ""', "empty"]),
    ("command-blank", command('"   "'), ["[experiment] command", "empty"]),
    (
        "command-unbalanced-quote",
        command("'python3 train.py --name \"x'"),
        ["[experiment] command", "No closing quotation"],
    ),
    # recipes that are no trial function
    (
        "recipe-os-getcwd",
        spec(recipe='"os:getcwd"'),
        ['recipe = "os:getcwd"', "standard library", "train(config, ctx)"],
    ),
    (
        "recipe-os.path-join",
        spec(recipe='"os.path:join"'),
        ["recipe", "standard library", "train(config, ctx)"],
    ),
    (
        "recipe-builtins-print",
        spec(recipe='"builtins:print"'),
        ["recipe", "standard library"],
    ),
    (
        "recipe-fairtrial-internal",
        spec(recipe='"fairtrial.spec:flatten"'),
        ["recipe", "fairtrial's own module"],
    ),
    (
        "recipe-wrong-signature",
        spec(recipe='"helpers:helper"'),
        ["recipe", "helper(x)", "cannot be called as helper(config, ctx)"],
    ),
    ("recipe-a-class", spec(recipe='"helpers:Trainer"'), ["recipe", "is a class"]),
    ("recipe-a-constant", spec(recipe='"helpers:SETTING"'), ["recipe", "is an int object"]),
    ("recipe-exits-on-import", spec(recipe='"exits:train"'), ["recipe", "SystemExit(3)"]),
    (
        "recipe-newline-in-ref",
        spec(recipe='"toy:probe\\nrm -rf"'),
        ["recipe", "toy:probe\\nrm -rf", "module:function"],
    ),
    # tasks: the factory is called when the spec loads, so the same rules hold before it runs
    ("task-os-abort", spec(task="os:abort"), ["task", "standard library"]),
    ("task-fairtrial-cli", spec(task="fairtrial.cli:main"), ["task", "fairtrial's own module"]),
    ("task-relative-path", spec(task="../../etc:passwd"), ["task", "module:function"]),
    ("task-factory-raises", spec(task="helpers:make_task"), ["task", "no data today"]),
    # other values that used to reach a crash at run time
    (
        "int-beyond-64-bit-in-arm",
        spec(baseline="width = 1", arms="[arms.wide]\nwidth = 99999999999999999999999"),
        ["[arms.wide] width", "64-bit"],
    ),
    ("int-of-5000-digits", spec(baseline="x = " + "9" * 5000), ["invalid TOML", "64-bit"]),
    ("inf-in-arm-config", spec(arms="[arms.noisy]\nnoise = inf"), ["[arms.noisy] noise", "finite"]),
    ("nan-in-list", spec(baseline="w = [1.0, nan]"), ["[baseline] w", "finite"]),
    ("nul-in-value", spec(baseline='tag = "a\\u0000b"'), ["[baseline] tag", "NUL"]),
    ("nul-in-key", spec(baseline='"a\\u0000b" = 1'), ["[baseline] a\\x00b", "NUL"]),
    ("nul-in-description", spec(experiment='description = "\\u0000"'), ["description", "NUL"]),
    ("key-with-space", spec(baseline='"learning rate" = 1'), ["[baseline] learning rate", "key"]),
    (
        "quoted-dotted-key-shadows-a-table",
        spec(baseline='x = 1\n"x.y" = 2', arms='[arms.a]\n"x.y" = 3'),
        ["[baseline] x.y", "config key"],
    ),
    (
        "key-escaping-the-work-folder",
        spec(
            baseline='lr = 1\n"/../../../../tmp/evil" = 2',
            arms='[arms.a]\nlr = 2\n"/../../../../tmp/evil" = 3',
            tail='[ablations]\nleave_one_out = "a"',
        ),
        ["[baseline] /../../../../tmp/evil", "config key"],
    ),
    ("empty-key", spec(baseline='"" = 1'), ["[baseline]", "config key"]),
    (
        "very-long-name",
        spec().replace('"hostile"', '"' + "n" * 5000 + '"'),
        ["[experiment] name", "up to 100 letters"],
    ),
    (
        "very-long-arm-name",
        spec(arms="[arms." + "a" * 300 + "]\nnoise = 0.5"),
        ["arm names are up to 100 letters"],
    ),
    (
        "very-long-key",
        spec(baseline="k" * 200 + " = 1"),
        ["[baseline]", "at most 80 characters"],
    ),
    (
        "too-many-arms",
        spec(arms="\n".join(f"[arms.a{i}]\nnoise = {i + 1}" for i in range(MAX_ARMS))),
        [f"{MAX_ARMS + 1} arms", f"at most {MAX_ARMS}"],
    ),
    (
        "too-many-trials",
        spec(seeds="101", arms="\n".join(f"[arms.a{i}]\nnoise = {i + 1}" for i in range(199))),
        ["[experiment] seeds = 101", "200 arms × 101 seeds", f"at most {MAX_TRIALS}"],
    ),
    (
        "too-many-values",
        spec(baseline=f"x = [{', '.join(['1'] * (MAX_CONFIG_VALUES + 1))}]"),
        ["[baseline]", f"at most {MAX_CONFIG_VALUES}"],
    ),
    (
        "ablation-named-like-a-declared-arm",
        spec(
            baseline="lr = 1\nwd = 0",
            arms="[arms.a]\nlr = 2\nwd = 1\n\n[arms.a-no-lr]\nlr = 3",
            tail='[ablations]\nleave_one_out = "a"',
        ),
        ["[arms.a-no-lr]", "rename this arm"],
    ),
    (
        "leave_one_out-twice",
        spec(
            baseline="lr = 1\nwd = 0",
            arms="[arms.a]\nlr = 2\nwd = 1",
            tail='[ablations]\nleave_one_out = ["a", "a"]',
        ),
        ['[ablations] leave_one_out = "a"', "twice"],
    ),
    (
        "right-to-left-override-in-key",
        spec(baseline='"x\\u202ey" = 1'),
        ["[baseline] x\\u202ey", "config key"],
    ),
]


def _write(tmp_path: Path, write_spec: Callable[..., Path], text: str) -> Path:
    """``text`` as tmp_path/spec.toml, beside the toy recipes and :data:`MODULES`."""
    for name, code in MODULES.items():
        (tmp_path / name).write_text(code)
    path = write_spec(text)
    assert path.read_text() == text
    return path


def _one_line(stderr: str, expected: list[str]) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_spec_is_one_line_at_spec_time(
    text: str,
    expected: list[str],
    tmp_path: Path,
    write_spec: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _write(tmp_path, write_spec, text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAIRTRIAL_STORE", raising=False)
    for command_ in ("plan", "run"):
        with pytest.raises(SystemExit) as exited:
            main([command_, str(path)])
        assert exited.value.code == 2, command_
        _one_line(capsys.readouterr().err, expected)
    # refused before any trial ran: `run` never even opened its store
    assert not (tmp_path / ".fairtrial").exists()


def test_the_good_spec_behind_the_cases_still_loads(
    tmp_path: Path,
    write_spec: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cases break one part of a valid spec: without the break, it plans."""
    path = _write(tmp_path, write_spec, spec())
    monkeypatch.chdir(tmp_path)
    main(["plan", str(path), "--store", str(tmp_path / "ledger.db")])
    assert "2 arms × 3 seeds = 6 trials" in capsys.readouterr().out


def _ft(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("FAIRTRIAL_STORE", None)
    return subprocess.run(
        [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


def test_spec_path_of_a_device_is_refused_unread(tmp_path: Path) -> None:
    """/dev/zero never ends: reading it grew the process to gigabytes."""
    out = _ft("plan", "/dev/zero", cwd=tmp_path)
    assert out.returncode == 2
    _one_line(out.stderr, ["/dev/zero: is a character device", "regular file of at most 1 MiB"])


def test_spec_path_of_a_fifo_is_refused_without_hanging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening a FIFO for reading blocks until a writer comes: none will."""
    fifo = tmp_path / "exp.toml"
    os.mkfifo(fifo)
    out = _ft("plan", str(fifo), cwd=tmp_path)
    assert out.returncode == 2
    _one_line(out.stderr, [f"{fifo}: is a named pipe (FIFO)", "regular file"])
    # `report` takes a spec path too (in this process: the subprocess showed it cannot hang)
    with pytest.raises(SystemExit) as exited:
        main(["report", str(fifo), "--store", str(tmp_path / "l.db")])
    assert exited.value.code == 2
    _one_line(capsys.readouterr().err, [f"{fifo}: is a named pipe (FIFO)", "regular file"])


def test_spec_file_over_the_size_limit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.toml"
    big.write_text(GOOD + "#" * (MAX_SPEC_BYTES - len(GOOD.encode()) + 1))
    with pytest.raises(SystemExit) as exited:
        main(["plan", str(big)])
    assert exited.value.code == 2
    _one_line(capsys.readouterr().err, [f"is {MAX_SPEC_BYTES + 1} bytes", "at most 1 MiB"])
    # at the limit it is a spec like any other
    big.write_text(GOOD + "#" * (MAX_SPEC_BYTES - len(GOOD.encode())))
    from fairtrial.spec import load_spec

    assert load_spec(big).name == "hostile"


def test_spec_path_of_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "exp.toml").mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["report", str(tmp_path / "exp.toml"), "--store", str(tmp_path / "l.db")])
    assert exited.value.code == 2
    _one_line(capsys.readouterr().err, ["exp.toml: is a directory", "regular file"])


def test_the_largest_root_seed_is_held_by_every_store(
    store_url: str,
    tmp_path: Path,
    write_spec: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """root_seed < 2^31 is the bound: its largest value runs and is stored on SQLite and on
    PostgreSQL, whose Integer column refused 2^31 ('integer out of range') after the run had
    started."""
    path = write_spec(spec(experiment="root_seed = 2147483647", seeds="2", arms=""))
    monkeypatch.chdir(tmp_path)
    try:
        main(["run", str(path), "--backend", "inline", "--store", store_url, "--no-report"])
    except SystemExit as exited:
        raise AssertionError(capsys.readouterr().err) from exited
    from fairtrial.ledger import Ledger

    ledger = Ledger(store_url)
    try:
        (exp,) = ledger.experiments()
        assert exp.root_seed == 2147483647
        assert sorted(t.status for t in ledger.trials(exp.id)) == ["finished", "finished"]
    finally:
        ledger.close()
