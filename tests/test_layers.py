"""The import rules of the layout: module-level imports form no circle.

A circle means a module runs while one it needs is half-initialised: it
works only for the import order of the day, and it hides which of two
modules is the lower layer. The check reads the source (no module is
imported) and follows the imports that run at import time: those at module
level and in class bodies, not those inside functions. Importing
``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those edges count
too, except to the importer's own enclosing packages, which are already
being imported when it runs.

For now the rule is checked inside ``comparisons/``; the other layers follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .serverproc import ROOT


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (function bodies excluded)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
                     modules: set[str]) -> set[str]:
    """The modules among `modules` that one import statement names (``from P import m``: P.m if a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
    named = {f"{base}.{alias.name}" for alias in node.names} & modules
    return named | ({base} & modules)


def with_parent_packages(target: str, importer: str) -> set[str]:
    """`target` and the packages its import runs first, minus the importer's own enclosing packages."""
    parts = target.split(".")
    parents = {".".join(parts[:i]) for i in range(1, len(parts))}
    enclosing = {importer.rsplit(".", i)[0] for i in range(1, importer.count(".") + 1)}
    return {target} | (parents - enclosing)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports at import time."""
    paths = {module_name(path, root): path for path in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in import_time_imports(tree):
            for target in imported_modules(node, name, path.name == "__init__.py", set(paths)):
                edges |= with_parent_packages(target, name)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path ``[a, b, ..., a]``, or None."""
    finished: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if child in path:
                return path[path.index(child):] + [child]
            if child not in finished and (cycle := visit(child)):
                return cycle
        path.pop()
        finished.add(node)
        return None

    for start in sorted(graph):
        if start not in finished and (cycle := visit(start)):
            return cycle
    return None


def test_comparisons_imports_form_no_cycle() -> None:
    graph = import_graph(Path(ROOT), "comparisons")
    assert "comparisons.loadgen.runner" in graph and "comparisons.wrk" in graph["comparisons.loadgen.runner"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_check_sees_a_circle_through_a_package_init(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .inner import thing\n")
    (package / "sub" / "inner.py").write_text("from pkg.outer import other\nthing = 1\n")
    (package / "late.py").write_text("")
    (package / "outer.py").write_text(
        "def later():\n    import pkg.late\n\nfrom pkg.sub.inner import thing\nother = 2\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.outer"] == {"pkg.sub", "pkg.sub.inner"}
    assert find_cycle(graph) == ["pkg.outer", "pkg.sub", "pkg.sub.inner", "pkg.outer"]
