"""The built-in torch recipes are files a researcher can copy: each holds its training loop.

A torch recipe file defines its own options, model, optimizer, learning-rate schedule and
training loop; it imports nothing private from the recipes package at module level (the
batched form of ``mlp.py`` reaches for the vectorized backend's loop inside its function only).
The pieces every torch recipe shares live in one public, documented module,
``fairtrial.recipes.torchkit``. A copy of ``mlp.py`` next to a spec runs as the built-in does.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")  # digits

from fairtrial.backends import InlineBackend  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.errors import SpecError  # noqa: E402
from fairtrial.ledger import Ledger  # noqa: E402
from fairtrial.recipes import (  # noqa: E402
    BUILTIN_RECIPES,
    ConfigError,
    build_config,
    config_class_of,
    describe_config,
    mlp,
)
from fairtrial.runner import run_experiment  # noqa: E402
from fairtrial.spec import load_spec  # noqa: E402
from fairtrial.tasks import import_object  # noqa: E402

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = ROOT / "src" / "fairtrial" / "recipes"
TORCH_RECIPES = ("mlp", "cnn1d", "cnn2d", "transformer")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recipes_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Recipes\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_shared_module_is_public_and_documented() -> None:
    from fairtrial.recipes import torchkit

    assert not (RECIPES_DIR / "_torch.py").exists()
    assert torchkit.__doc__ and len(torchkit.__doc__.strip().splitlines()) > 3
    section = _recipes_section()
    assert "fairtrial.recipes.torchkit" in section
    for name in torchkit.__all__:
        obj = getattr(torchkit, name)
        assert inspect.getdoc(obj), f"torchkit.{name} has no docstring"
        assert f"`{name}" in section, f"torchkit.{name} is not listed in the README's recipes"
    public = {n for n, o in vars(torchkit).items() if inspect.isfunction(o) and n[0] != "_"}
    assert public == set(torchkit.__all__)


def _module_imports(tree: ast.Module) -> set[str]:
    """Modules imported at module level (a TYPE_CHECKING block included)."""
    out: set[str] = set()
    for node in tree.body:
        blocks = node.body if isinstance(node, ast.If) else [node]
        for inner in blocks:
            if isinstance(inner, ast.ImportFrom) and inner.module:
                out.add(inner.module)
            elif isinstance(inner, ast.Import):
                out.update(a.name for a in inner.names)
    return out


def _calls(fn: ast.AST) -> set[str]:
    """``name`` or ``obj.attr`` of every call in ``fn``."""
    out = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                out.add(f.id)
            elif isinstance(f, ast.Attribute):
                base = f.value.id if isinstance(f.value, ast.Name) else ""
                out.add(f"{base}.{f.attr}" if base in ("ctx", "torch") else f".{f.attr}")
    return out


@pytest.mark.parametrize("name", TORCH_RECIPES)
def test_each_torch_recipe_file_holds_its_training_loop(name: str) -> None:
    path = RECIPES_DIR / f"{name}.py"
    tree = ast.parse(path.read_text())
    own = {n for n in _module_imports(tree) if n.startswith("fairtrial.")}
    # the recipes package (recipe, vectorized), the public kit, and types for annotations
    allowed = {"fairtrial.recipes", "fairtrial.recipes.torchkit"}
    assert own <= allowed | {"fairtrial.context", "fairtrial.tasks"}, own
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    # the optimizer, the schedule and the loop are this file's own functions
    assert {"make_optimizer", "learning_rate", "fit", "train"} <= set(functions)
    loop = functions["fit"]
    loops = [n for n in ast.walk(loop) if isinstance(n, (ast.For, ast.While))]
    assert loops, "fit has no loop"
    called = _calls(loop)
    assert {"make_optimizer", "learning_rate", "batches", "ctx.log", "ctx.phase"} <= called
    assert {".backward", ".step", ".zero_grad"} <= called
    assert "fit" in _calls(functions["train"])
    assert "ctx.evaluate_test" in _calls(functions["train"])
    # train's ctx is a TrialContext (imported for type checking only)
    module = importlib.import_module(f"fairtrial.recipes.{name}")
    fn: Callable[..., Any] = inspect.unwrap(module.train)
    hints = typing.get_type_hints(fn, {**vars(module), "TrialContext": TrialContext})
    assert hints["ctx"] is TrialContext and hints["cfg"] is module.Config
    assert BUILTIN_RECIPES[name] == f"fairtrial.recipes.{name}:train"


SPEC = """
[experiment]
name = "{name}"
task = "digits"
recipe = "{recipe}"
seeds = 2

[baseline]
epochs = 2
hidden = 16
batch_size = 128
label_smoothing = 0.0
warmup_steps = 0
{extra}

[arms.smooth]
label_smoothing = 0.1
warmup_steps = 4
"""


def test_a_copy_of_mlp_py_runs_as_the_builtin(tmp_path: Path) -> None:
    shutil.copy(RECIPES_DIR / "mlp.py", tmp_path / "my_mlp.py")
    copy = config_class_of(import_object("my_mlp:train", tmp_path, "recipe"))
    assert copy is not None and copy is not mlp.Config
    assert describe_config(copy) == describe_config(mlp.Config)  # the same options
    seen: dict[str, dict[tuple[str, int], Any]] = {}
    for name, recipe in [("builtin", "mlp"), ("copy", "my_mlp:train")]:
        path = tmp_path / f"{name}.toml"
        path.write_text(SPEC.format(name=name, recipe=recipe, extra=""))
        spec = load_spec(path)
        led = Ledger(tmp_path / f"{name}.db")
        try:
            assert run_experiment(spec, led, InlineBackend(), show_progress=False).finished == 4
            preds = {
                e["trial_id"]: e["predictions"] for e in led.test_evaluations(spec.experiment_id)
            }
            seen[name] = {
                # (attempt, step, name, value) of every point: all but the wall time
                (t.arm, t.seed): (
                    t.result,
                    preds[t.id],
                    [(m[0], m[1], m[3], m[4]) for m in led.metrics(t.id)],
                )
                for t in led.trials(spec.experiment_id)
            }
        finally:
            led.close()
    assert seen["copy"].keys() == seen["builtin"].keys()
    assert seen["copy"] == seen["builtin"]
    # the copy's options are checked as the built-in's are
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.format(name="bad", recipe="my_mlp:train", extra="hiden = 3"))
    with pytest.raises(SpecError, match="unknown option 'hiden'"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="'hidden' must be a whole number from 1 to 65536"):
        build_config(copy, {"hidden": 0})


@pytest.mark.parametrize("name", TORCH_RECIPES)
def test_a_regression_task_gets_one_clear_line(name: str) -> None:
    import numpy as np

    from fairtrial.tasks import Task

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(60, 2))
    task = Task.from_arrays("reg", x, rng.normal(size=60), metric="mse", kind="regression")
    ctx = TrialContext(config={}, seed=0, root_seed=0, task=task, emit=lambda k, p: None)
    module = importlib.import_module(f"fairtrial.recipes.{name}")
    with pytest.raises(ValueError, match=f"^the {name} recipe classifies: this task is a regr"):
        module.train({}, ctx)
