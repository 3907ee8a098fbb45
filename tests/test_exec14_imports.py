"""The import graph of ``src/fairtrial``, read statically: no circles, and backends stay a seam.

Every ``import`` and ``from ... import`` counts, at module level and inside functions (a
function-level import is still a dependency: it only runs later), and so does
``importlib.import_module("fairtrial....")`` with a literal name. ``from fairtrial.x import y``
where ``y`` is a submodule is an import of ``fairtrial.x.y``, and importing ``fairtrial.x.y``
also runs ``fairtrial/x/__init__.py`` first: that package is an edge too, unless it is one of
the importer's own packages (those are always imported before the importer runs).

Imports under ``if TYPE_CHECKING:`` never run: they are left out of the circle check (they
cannot make an import fail), but count for the layering check (``fairtrial.backends`` must
not depend on recipe or CLI code, not even for a type).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fairtrial"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    file: str
    line: int
    text: str
    type_checking: bool


def _modules(src: Path, package: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.AST, bool]]:
    """Every import node (and literal importlib.import_module call), and whether it sits
    under ``if TYPE_CHECKING:``."""
    found: list[tuple[ast.AST, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node, typing_only))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def import_graph(src: Path = SRC, package: str = PACKAGE) -> tuple[Edge, ...]:
    """Every import edge between modules of ``src/package``."""
    modules = _modules(src, package)
    edges: list[Edge] = []
    for source, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        is_package = path.name == "__init__.py"
        own = {*_ancestors(source), source}
        for node, typing_only in _imports(ast.parse(text, str(path))):
            named: list[str] = []
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = source.split(".") if is_package else source.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    named.append(sub if sub in modules else base)
            else:
                assert isinstance(node, ast.Call)
                named = [node.args[0].value]  # type: ignore[attr-defined]
            line = getattr(node, "lineno", 0)
            for name in named:
                # the innermost module of this package the name reaches
                target = next(
                    (m for m in [name, *reversed(_ancestors(name))] if m in modules), None
                )
                if target is None:
                    continue
                reached = [target, *(a for a in _ancestors(target) if a not in own)]
                for t in reached:
                    if t != source:
                        edges.append(
                            Edge(
                                source,
                                t,
                                str(path.relative_to(src.parent)),
                                line,
                                " ".join(" ".join(lines[line - 1 : node.end_lineno]).split()),
                                typing_only,
                            )
                        )
    return tuple(edges)


def find_cycles(edges: Iterable[Edge]) -> list[list[Edge]]:
    """One circle per strongly connected group of modules (Tarjan), as the edges that close
    it, then every other import inside that group (any of them may be the one to cut)."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for group in groups:
        members = set(group)
        start = group[0]
        # shortest way back to the start through the group (breadth first)
        paths: dict[str, list[Edge]] = {start: []}
        queue = [start]
        found: list[Edge] | None = None
        while queue and found is None:
            v = queue.pop(0)
            for w, e in sorted(graph[v].items()):
                if w == start:
                    found = [*paths[v], e]
                    break
                if w in members and w not in paths:
                    paths[w] = [*paths[v], e]
                    queue.append(w)
        assert found is not None
        rest = [
            e for v in group for w, e in sorted(graph[v].items()) if w in members and e not in found
        ]
        cycles.append(found + rest)
    return cycles


def describe(cycle: list[Edge]) -> str:
    """The circle's modules in order, then each import that makes up the group."""
    closing: list[Edge] = []
    for e in cycle:
        closing.append(e)
        if e.target == cycle[0].source:
            break
    names = " -> ".join([cycle[0].source, *(e.target for e in closing)])
    lines = [f"  {e.file}:{e.line}: {e.text}" for e in cycle]
    return "\n".join([names, *lines])


def test_the_graph_sees_every_kind_of_import() -> None:
    edges = import_graph()
    pairs = {(e.source, e.target) for e in edges}
    # a package's __init__ importing its own submodule
    assert ("fairtrial.backends", "fairtrial.backends.base") in pairs
    # "from fairtrial import provenance" is the submodule
    assert ("fairtrial.runner", "fairtrial.provenance") in pairs
    # a function-level import
    assert ("fairtrial.backends", "fairtrial.backends.vectorized") in pairs
    # importing a submodule of another package runs that package's __init__ first
    assert ("fairtrial.runner", "fairtrial.backends") in pairs
    # under TYPE_CHECKING: recorded, and marked
    assert any(e.type_checking for e in edges)


def test_the_check_finds_circles_of_every_kind(tmp_path: Path) -> None:
    """On a made-up package: circles through a function-level import and through a package's
    ``__init__`` are found; one closed only under TYPE_CHECKING is not a runtime circle."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",
        "pkg/b.py": "import pkg.a\n",
        "pkg/sub/__init__.py": "from pkg.sub.x import X\n",
        "pkg/sub/x.py": "from pkg.c import C\nX = 1\n",
        "pkg/sub/y.py": "",
        "pkg/c.py": "from pkg.sub import y\nC = 1\n",
        "pkg/t1.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import t2\n",
        "pkg/t2.py": "import importlib\nimportlib.import_module('pkg.t1')\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = import_graph(tmp_path, "pkg")
    runtime = [e for e in edges if not e.type_checking]
    circles = {frozenset(e.source for e in c) for c in find_cycles(runtime)}
    assert circles == {
        frozenset({"pkg.a", "pkg.b"}),
        # pkg.c imports pkg.sub.y, which runs pkg/sub/__init__.py, which imports pkg.c back
        frozenset({"pkg.c", "pkg.sub", "pkg.sub.x"}),
    }
    assert find_cycles(edges) and len(find_cycles(edges)) == 3  # t1 <-> t2 for types only
    text = describe(find_cycles(runtime)[0])
    assert text.startswith("pkg.a -> pkg.b -> pkg.a") and "pkg/a.py:2:" in text


def test_no_import_circle_in_fairtrial() -> None:
    runtime = [e for e in import_graph() if not e.type_checking]
    cycles = find_cycles(runtime)
    assert not cycles, "import circles:\n" + "\n".join(describe(c) for c in cycles)


def test_backends_import_no_recipe_and_no_cli_code() -> None:
    bad = [
        e
        for e in import_graph()
        if e.source.startswith("fairtrial.backends")
        and any(e.target == p or e.target.startswith(p + ".") for p in FORBIDDEN)
    ]
    assert not bad, "\n".join(f"{e.file}:{e.line}: {e.text}" for e in bad)


#: what the backend seam never imports: backends decide where a trial runs, the execution
#: module (fairtrial.execute) what runs
FORBIDDEN = ("fairtrial.recipes", "fairtrial.cli")


if __name__ == "__main__":
    for c in find_cycles([e for e in import_graph() if not e.type_checking]):
        print(describe(c), end="\n\n")
