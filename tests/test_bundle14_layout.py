"""The bundle package's layout: one job per module, each small and saying what it does, the
modules layered without an import circle, every function defined once, and every name that
code imported from ``fairtrial.bundle`` still importable from there."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fairtrial
import fairtrial.tomlw
from fairtrial import bundle as B

PACKAGE = Path(B.__file__).parent
TOMLW = Path(fairtrial.tomlw.__file__)
#: what each module of the package may import from its siblings (TYPE_CHECKING aside)
LAYERS = {
    "archive": set(),
    "contents": {"archive"},
    "checks": {"archive"},
    "reader": {"archive", "checks"},
}
#: every name src/, tests/, bench/ and examples/ import from fairtrial.bundle
IMPORTED = {
    "Bundle",
    "GZIP_HEADER",
    "Limits",
    "_deterministic_gzip",
    "_dumps",
    "file_sha256",
    "open_archive",
    "read_bundle",
    "spec_toml",
    "verify_bundle",
    "write_archive",
    "write_bundle",
}


def modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def test_one_job_per_small_documented_module() -> None:
    assert set(modules()) == set(LAYERS)
    for path in [*modules().values(), TOMLW]:
        text = path.read_text()
        assert len(text.splitlines()) < 500, f"{path.name} is too long"
        doc = ast.get_docstring(ast.parse(text))
        assert doc, f"{path.name} says what it does"
        assert "\n\n" not in doc.strip(), f"{path.name}'s docstring is one paragraph"


def sibling_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports when it runs (not only for type checking)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports only for the type checker
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.module:
                if sub.module.startswith("fairtrial.bundle."):
                    found.add(sub.module.rsplit(".", 1)[1])
                elif sub.module == "fairtrial.bundle" or (
                    sub.module == "fairtrial" and any(a.name == "bundle" for a in sub.names)
                ):
                    found.add("__init__")
    return found


def test_modules_are_layered_without_a_circle() -> None:
    for name, path in modules().items():
        assert sibling_imports(path) <= LAYERS[name], name
    # the spec file writer stands alone: using it does not load the bundle code
    assert not sibling_imports(TOMLW)
    code = "import sys, fairtrial.tomlw; print('fairtrial.bundle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # a module imported first loads the package first, so one fresh import covers them all
    subprocess.run([sys.executable, "-c", "import fairtrial.bundle.checks"], check=True)


def test_every_function_is_defined_once() -> None:
    seen: dict[str, str] = {}
    for path in [*modules().values(), PACKAGE / "__init__.py", TOMLW]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in seen, f"{node.name} in {path.name} and {seen[node.name]}"
                seen[node.name] = path.name
    assert not any(
        isinstance(n, (ast.FunctionDef, ast.ClassDef))
        for n in ast.parse((PACKAGE / "__init__.py").read_text()).body
    ), "the package's __init__ only re-exports"


def test_the_names_code_imported_are_still_there() -> None:
    assert set(B.__all__) >= IMPORTED
    for name in B.__all__:
        obj = getattr(B, name)
        where = getattr(obj, "__module__", None)
        assert where is None or where.startswith(("fairtrial.bundle.", "fairtrial.tomlw")), name
    assert B.spec_toml is fairtrial.tomlw.spec_toml
