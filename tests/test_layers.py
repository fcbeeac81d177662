"""The import rules of the layout: each layer imports only what is below it, and no circle.

The layers, bottom up, as a reader learns them (README, "Layout"):

    runtimes    tasklets/, greenhub/        each imports only itself (and third-party packages)
    protocol    flash_green/http/           only the standard library
    adapter     wsgi, colour, loader, ...   protocol, runtimes
    apps        flash_green/apps/           adapter, protocol, runtimes (never an engine)
    helpers     config, binds, stats, ...   what engines and processes share: adapter and below
    engines     flash_green/engines/        helpers and below; no engine module imports another
                                            (base and the _underscore modules are their helpers)
    processes   supervisor, startup         engines and below; no engine imports them
    cli         cli, console, reload, ...   everything above but the tools
    tools       comparisons/                anything; nothing imports it

The check reads the source (no module is imported). Every import statement
counts for the layers, wherever it stands: inside a function it is a late
import, still a dependency. For circles only the imports that run when the
module is imported count: those at module level and in class bodies, not
those inside functions or under `if TYPE_CHECKING:`. Importing ``a.b.c``
also runs ``a/__init__`` and ``a/b/__init__``; those edges count too,
except to the importer's own enclosing packages, which are already being
imported when it runs.

Inside the engines layer the rule is the course's: an engine module
(sequential.py, cgi.py, threaded.py, epoll.py, event.py ...) holds one
model and imports no other engine module; what two models share lives in
the base (base.py) or in an underscore helper (`_blocking`: the blocking
connection loop; `_per_thread`: a thread per connection, v2 and v3;
`_reactor`: the epoll loop, v4 and v5; `_pump`, `_linger`, `_accept`,
`_read_timeouts`, `_tls`, `_loop`: rules and pieces several models use).
So the course order - v1 sequential, v2 cgi, v3 threaded, v4 epoll, v5
event - is also the dependency order: no chapter's code needs a later one.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .serverproc import ROOT

#: The project's top-level packages, read by the checks.
PACKAGES = ("tasklets", "greenhub", "flash_green", "comparisons")

#: The modules directly in flash_green/ (outside http/, engines/, apps/), by layer.
TOP_LEVEL = {
    "adapter": ("wsgi", "colour", "loader", "accesslog", "proxy", "tracing", "handler", "cgi"),
    "helpers": ("config", "binds", "tls", "logfiles", "stats", "watchdog", "patching"),
    "processes": ("supervisor", "startup"),
    "cli": ("cli", "console", "reload", "settings", "__main__"),
}

#: What each layer may import besides itself.
BELOW = {
    "runtimes": set(),
    "protocol": set(),
    "adapter": {"protocol", "runtimes"},
    "apps": {"adapter", "protocol", "runtimes"},
    "helpers": {"adapter", "protocol", "runtimes"},
    "engines": {"helpers", "adapter", "protocol", "runtimes"},
    "processes": {"engines", "helpers", "adapter", "protocol", "runtimes"},
    "cli": {"processes", "engines", "helpers", "adapter", "protocol", "runtimes"},
    "tools": {"cli", "processes", "engines", "helpers", "apps", "adapter", "protocol", "runtimes"},
}

@dataclass(frozen=True)
class Import:
    """One module naming another in an import statement."""

    importer: str
    target: str
    #: Runs when the importer is imported (not in a function, not under TYPE_CHECKING).
    at_import: bool
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_statements(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it runs when the module is imported."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(nodes: list[ast.AST], at_import: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append((node, at_import))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(list(ast.iter_child_nodes(node)), False)
            elif isinstance(node, ast.If) and is_type_checking(node.test):
                visit(node.body, False)
                visit(node.orelse, at_import)
            else:
                visit(list(ast.iter_child_nodes(node)), at_import)

    visit(tree.body, True)
    return found


def absolute_base(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a ``from X import ...`` names as X, relative levels resolved."""
    base = node.module or ""
    if not node.level:
        return base
    anchor = importer.split(".")
    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
    return ".".join(anchor + ([base] if base else []))


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
                     modules: set[str]) -> set[str]:
    """The modules among `modules` that one import statement names (``from P import m``: P.m if a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = absolute_base(node, importer, is_package)
    named = {f"{base}.{alias.name}" for alias in node.names} & modules
    return named | ({base} & modules)


def with_parent_packages(target: str, importer: str) -> set[str]:
    """`target` and the packages its import runs first, minus the importer's own enclosing packages."""
    parts = target.split(".")
    parents = {".".join(parts[:i]) for i in range(1, len(parts))}
    enclosing = {importer.rsplit(".", i)[0] for i in range(1, importer.count(".") + 1)}
    return {target} | (parents - enclosing)


def module_paths(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(path, root): path for package in packages for path in (root / package).rglob("*.py")}


def project_imports(root: Path, packages: tuple[str, ...]) -> list[Import]:
    """Every import of one project module by another (parent packages included)."""
    paths = module_paths(root, packages)
    found = []
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, at_import in import_statements(tree):
            for target in imported_modules(node, name, path.name == "__init__.py", set(paths)):
                found += [Import(name, module, at_import, node.lineno)
                          for module in with_parent_packages(target, name) if module != name]
    return found


def outside_imports(root: Path, package: str) -> list[tuple[str, str, int]]:
    """(module, top-level name, line) of every absolute import of `package`'s modules."""
    found = []
    for path in (root / package).rglob("*.py"):
        name = module_name(path, root)
        for node, _ in import_statements(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(name, alias.name.partition(".")[0], node.lineno) for alias in node.names]
            elif not node.level and node.module != "__future__":
                found.append((name, (node.module or "").partition(".")[0], node.lineno))
    return found


def import_graph(root: Path, *packages: str) -> dict[str, set[str]]:
    """Module -> the project modules it imports at import time."""
    graph: dict[str, set[str]] = {name: set() for name in module_paths(root, packages)}
    for edge in project_imports(root, packages):
        if edge.at_import:
            graph[edge.importer].add(edge.target)
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


# -- the layers -------------------------------------------------------------------

def layer_of(module: str) -> str:
    """The layer of a project module; KeyError for a top-level module no layer claims."""
    package, _, rest = module.partition(".")
    if package in ("tasklets", "greenhub"):
        return "runtimes"
    if package == "comparisons":
        return "tools"
    sub = rest.partition(".")[0]
    if sub in ("http", "engines", "apps"):
        return {"http": "protocol", "engines": "engines", "apps": "apps"}[sub]
    for layer, names in TOP_LEVEL.items():
        if sub in names:
            return layer
    raise KeyError(f"{module} belongs to no layer: add it to TOP_LEVEL in tests/test_layers.py")


def is_engine_model(module: str) -> bool:
    """One concurrency model's module (engines/sequential.py ...), not the
    engines' shared base, helpers (_accept, _loop ...) or registry."""
    parts = module.split(".")
    return len(parts) == 3 and parts[1] == "engines" and parts[2] != "base" and not parts[2].startswith("_")


def why_forbidden(edge: Import) -> str | None:
    """What rule `edge` breaks, or None. The namespace package `flash_green`
    (an empty __init__) belongs to no layer."""
    if edge.target == "flash_green":
        return None
    importer, target = layer_of(edge.importer), layer_of(edge.target)
    if importer == "runtimes" and edge.importer.partition(".")[0] != edge.target.partition(".")[0]:
        return "a runtime imports only itself"
    if target != importer and target not in BELOW[importer]:
        return f"{importer} may not import {target}"
    if is_engine_model(edge.target) and edge.importer != edge.target and (
            is_engine_model(edge.importer) or importer == "engines"):
        return "no engine module imports another engine module (the registry names them as strings)"
    return None


def violations(edges: list[Import]) -> dict[tuple[str, str], str]:
    """(importer, imported) -> the rule it breaks, for every forbidden import."""
    found = {}
    for edge in edges:
        why = why_forbidden(edge)
        if why is not None:
            found[(edge.importer, edge.target)] = f"{why} (line {edge.line})"
    return found


def project() -> list[Import]:
    return project_imports(Path(ROOT), PACKAGES)


def test_every_module_belongs_to_a_layer():
    for name in module_paths(Path(ROOT), PACKAGES):
        if name != "flash_green":
            layer_of(name)
    assert (Path(ROOT) / "flash_green" / "__init__.py").read_text().strip() == "", \
        "flash_green/__init__.py imports nothing (it belongs to no layer)"


def test_each_layer_imports_only_what_is_below_it():
    found = violations(project())
    assert not found, "\n".join(f"{a} -> {b}: {why}" for (a, b), why in sorted(found.items()))


def test_the_protocol_core_imports_only_the_standard_library():
    foreign = [(module, name, line) for module, name, line in outside_imports(Path(ROOT), "flash_green/http")
               if name not in sys.stdlib_module_names]
    assert not foreign, foreign


def test_module_level_imports_form_no_circle():
    graph = import_graph(Path(ROOT), *PACKAGES)
    assert "comparisons.wrk" in graph["comparisons.loadgen.runner"]
    assert "flash_green.engines.base" in graph["flash_green.supervisor"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


# -- the checks themselves --------------------------------------------------------

@pytest.mark.parametrize("importer, target, rule", [
    ("flash_green.engines.sequential", "flash_green.supervisor", "engines may not import processes"),
    ("flash_green.engines.threaded", "flash_green.engines.epoll", "no engine module imports another"),
    ("flash_green.engines.base", "flash_green.engines.tasklets", "no engine module imports another"),
    ("flash_green.apps.tasklet_demo", "flash_green.engines.tasklets", "apps may not import engines"),
    ("flash_green.loader", "flash_green.reload", "adapter may not import cli"),
    ("flash_green.supervisor", "flash_green.cli", "processes may not import cli"),
    ("flash_green.http.connection", "flash_green.config", "protocol may not import helpers"),
    ("greenhub.hub", "flash_green.stats", "a runtime imports only itself"),
    ("tasklets.kernel", "greenhub.hub", "a runtime imports only itself"),
    ("flash_green.cli", "comparisons.compare", "cli may not import tools"),
])
def test_a_forbidden_import_is_reported(importer, target, rule):
    found = violations([*project(), Import(importer, target, False, 1)])
    assert rule in found[(importer, target)]


def test_a_late_import_counts_for_the_layers_but_not_for_circles(tmp_path: Path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import thing\n"
        "def later():\n    from pkg import high\n")
    (package / "high.py").write_text("from pkg.low import later\nthing = 1\n")
    edges = {(e.importer, e.target, e.at_import) for e in project_imports(tmp_path, ("pkg",))}
    assert edges == {("pkg.low", "pkg.high", False), ("pkg.low", "pkg", False), ("pkg.high", "pkg.low", True)}
    assert find_cycle(import_graph(tmp_path, "pkg")) is None


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
