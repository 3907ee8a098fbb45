"""The spec, ledger and registry modules split by job still export what was imported from them.

``fairtrial.spec`` became a package, and ``fairtrial.ledger.store`` and
``fairtrial.server.registry`` compose classes from per-job modules: every name the code,
tests, benchmarks and examples import from them must still be there, the pydantic models of
the TOML tables stay private, and a spec keeps its identity (the hash an experiment id is cut
from: changing it would orphan every ledger's experiments).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

import fairtrial.spec
from fairtrial.spec import load_spec
from test_spec import GOOD

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ("fairtrial.spec", "fairtrial.ledger", "fairtrial.server")


def _imports() -> set[tuple[str, str]]:
    """(module, name) of every ``from fairtrial.spec/ledger/server... import name`` in the repo."""
    found = set()
    for folder in ("src", "tests", "bench", "examples", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.level == 0
                    and (node.module or "").startswith(SPLIT)
                ):
                    found.update((str(node.module), alias.name) for alias in node.names)
    return found


def test_every_name_imported_from_the_split_modules_is_there() -> None:
    imports = _imports()
    assert ("fairtrial.spec", "load_spec") in imports, "the scan found no imports"
    missing = []
    for module, name in sorted(imports):
        if module.startswith("fairtrial.server.app") or name == "create_app":
            pytest.importorskip("fastapi")
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, missing


@pytest.mark.parametrize(
    "module", ["fairtrial.spec", "fairtrial.ledger.store", "fairtrial.server.registry"]
)
def test_everything_listed_as_public_is_there(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


def test_the_models_of_the_toml_tables_stay_private() -> None:
    assert all(not name.startswith("_") for name in fairtrial.spec.__all__)
    assert not any(
        name.startswith("_") and name.endswith(("Experiment", "Hypothesis", "Compute"))
        for name in vars(fairtrial.spec)
    )


def test_a_spec_keeps_its_identity(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(GOOD))
    # the hash this spec had before the module was split
    assert spec.spec_hash == "158da8c7b87ca3c962a38e911db3a5705d0aebb3e1dcb1f26414aa68ea3889e8"
    assert spec.experiment_id == "158da8c7b87c"
    assert [(a["name"], a["kind"]) for a in spec.arm_table()["arms"]] == [
        ("baseline", "baseline"),
        ("proposed", "arm"),
        ("proposed-no-noise", "ablation"),
        ("proposed-no-optimizer.lr", "ablation"),
    ]
