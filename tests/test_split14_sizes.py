"""Every module of fairtrial does one job: none is over 600 lines, and each says what it does.

A file past that size does several jobs, which then change together for no reason and are
hard to review; it is split by job, each part with a module docstring saying what it does.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "fairtrial"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    return {p.relative_to(SRC).as_posix(): p for p in sorted(SRC.rglob("*.py"))}


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_600_lines() -> None:
    modules = _modules()
    assert len(modules) > 50, f"found only {len(modules)} modules under {SRC}"
    too_long = {name: _lines(path) for name, path in modules.items() if _lines(path) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"


def test_every_module_says_what_it_does() -> None:
    missing = [
        name
        for name, path in _modules().items()
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not missing, f"modules without a docstring: {missing}"
