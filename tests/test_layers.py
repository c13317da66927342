"""Import architecture of ``proxyscale``, checked from the source with ``ast`` (nothing is imported).

Rules:

- no import cycles between modules. Every ``import`` counts, at module level and inside
  functions, because a function-level import only hides a cycle until the function runs;
  imports under ``if TYPE_CHECKING:`` do not count, they never run.
- layers: a module may import its own layer or lower ones, never a higher one (``LAYERS``).
  The package root ``proxyscale/__init__.py`` is exempt.
- ``run/`` and ``report/`` import no torch at module level, directly or through another
  module's module-level imports (planning and reports must load without it); ``report/``
  never imports ``proxyscale.train``, by any chain of imports.

Imports made by ``importlib.import_module`` (lazy package attributes, step references) are
strings, not syntax, and are not seen here.
"""
from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "proxyscale"

# top-level entry under proxyscale/ -> layer, lowest first; a module may import only its own
# layer or lower ones
LAYERS: dict[str, int] = {
    "config": 0, "seeding": 0, "errors": 0, "registry": 0, "configs": 0,
    "store": 1,
    "data": 2, "models": 2,
    "train": 3, "evaluate": 3,
    "attribute": 4, "select": 4, "analyze": 4,
    "run": 5, "report": 5,
    "studies": 6,
    "api": 7, "cli": 7,
}
NO_MODULE_LEVEL_TORCH = ("run", "report", "api", "cli")  # api, cli: a refused command answers before torch loads

Graph = dict[str, set[str]]


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name."""

    importer: str
    target: str  # a module of the package, or an outside name such as "torch.nn"
    in_function: bool
    line: int


# ------------------------------------------------------------------ reading the source
def module_names(root: Path) -> dict[str, Optional[Path]]:
    """Every module of the package at ``root``: dotted name -> file (None for a directory
    without ``__init__.py``, which ``from pkg import name`` can still target)."""
    modules: dict[str, Optional[Path]] = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
        for k in range(1, len(parts)):  # the directories above it are (namespace) packages
            modules.setdefault(".".join(parts[:k]), None)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """True for the test of ``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(nodes: Iterable[ast.AST], in_function: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Import statements under ``nodes`` with whether they sit inside a function."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse, in_function)  # the else branch does run
        else:
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _import_nodes(ast.iter_child_nodes(node), inner)


def _known(name: str, modules: dict[str, Optional[Path]]) -> str:
    """``name`` if it is a module, else its longest prefix that is: importing a missing or
    unknown submodule still runs the packages above it."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def _targets(node: ast.stmt, importer: str, modules: dict[str, Optional[Path]]) -> list[str]:
    """Absolute targets of one import statement (package modules resolved, others as written)."""
    root = importer.split(".")[0]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [_known(n, modules) if n.split(".")[0] == root else n for n in names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        is_pkg = str(modules[importer]).endswith("__init__.py")
        package = importer.split(".") if is_pkg else importer.split(".")[:-1]
        if node.level - 1 >= len(package):
            return []  # beyond the top: Python refuses it, nothing to draw
        base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != root:
        return [base]
    # `from pkg import name` loads the submodule pkg.name when there is one, else only pkg
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _known(base, modules) for a in node.names]


def collect_imports(root: Path) -> list[Import]:
    """Every import (outside ``if TYPE_CHECKING:``) of every module of the package at ``root``."""
    modules = module_names(root)
    found: list[Import] = []
    for name, path in modules.items():
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _import_nodes(tree.body):
            found += [Import(name, t, in_function, node.lineno) for t in _targets(node, name, modules)]
    return found


def build_graph(root: Path) -> Graph:
    """Module -> the package modules it imports (self-imports dropped: they cannot cycle)."""
    graph: Graph = {name: set() for name in module_names(root)}
    for imp in collect_imports(root):
        if imp.target in graph and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def module_level_graph(imports: list[Import]) -> Graph:
    """Module -> what loading it loads (function-level imports left out); outside packages
    appear by their top name, e.g. ``torch`` for ``from torch import nn``. Loading ``a.b.c``
    first runs ``a.b``'s ``__init__``, so every module also loads its parent package."""
    graph: Graph = {}
    for imp in imports:
        if not imp.in_function:
            inside = imp.target.split(".")[0] == imp.importer.split(".")[0]
            graph.setdefault(imp.importer, set()).add(imp.target if inside else imp.target.split(".")[0])
    for module in list(graph):
        parts = module.split(".")
        for i in range(2, len(parts)):
            graph[module].add(".".join(parts[:i]))
    for targets in list(graph.values()):
        for t in list(targets):
            parts = t.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return graph


# ------------------------------------------------------------------ checks on a graph
def shortest_path(graph: Graph, start: str, goals: set[str]) -> Optional[list[str]]:
    """The shortest path of at least one edge from ``start`` to one of ``goals``
    (breadth-first; ``goals={start}`` gives the shortest cycle through ``start``), or None."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt in goals:
                path = [nxt, node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if nxt not in parent and nxt != start:
                parent[nxt] = node
                queue.append(nxt)
    return None


def find_cycles(graph: Graph) -> list[list[str]]:
    """Import cycles as paths ``[a, b, ..., a]``: the shortest cycle through each module, each
    cycle once (rotated to start at its smallest name). A longer cycle whose modules all lie on
    shorter ones shows up once those are broken."""
    seen: set[tuple[str, ...]] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        cycle = shortest_path(graph, start, {start})
        if cycle is None:
            continue
        ring = cycle[:-1]
        k = ring.index(min(ring))
        canonical = tuple(ring[k:] + ring[:k])
        if canonical not in seen:
            seen.add(canonical)
            cycles.append([*canonical, canonical[0]])
    return sorted(cycles)


def chains_into(graph: Graph, starts: Iterable[str], goals: set[str]) -> list[list[str]]:
    """For each start that reaches ``goals``, its shortest import chain there."""
    return [path for m in sorted(starts) if (path := shortest_path(graph, m, goals)) is not None]


def top_level(module: str) -> Optional[str]:
    """The entry under the package root a module belongs to (None for the root itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def unknown_top_levels(graph: Graph, layers: dict[str, int]) -> list[str]:
    """Top-level entries that have modules but no row in the layer table."""
    return sorted({t for t in map(top_level, graph) if t is not None and t not in layers})


def layer_violations(graph: Graph, layers: dict[str, int]) -> list[tuple[str, str]]:
    """Imports ``(importer, imported)`` from a lower layer into a higher one. The package root
    is exempt; entries missing from ``layers`` are left to :func:`unknown_top_levels`."""
    bad = []
    for src in sorted(graph):
        for dst in sorted(graph[src]):
            s, d = top_level(src), top_level(dst)
            if s in layers and d in layers and layers[s] < layers[d]:
                bad.append((src, dst))
    return bad


def cycle_text(cycle: list[str]) -> str:
    """A path of modules as ``a -> b -> c``."""
    return " -> ".join(cycle)


# ------------------------------------------------------------------ the real tree
GRAPH = build_graph(ROOT)
IMPORTS = collect_imports(ROOT)
CYCLES = find_cycles(GRAPH)
PRESENT = sorted(t for t in LAYERS if any(top_level(m) == t for m in GRAPH))


@pytest.mark.parametrize("cycle", CYCLES or [None], ids=[cycle_text(c) for c in CYCLES] or ["none"])
def test_no_import_cycle(cycle: Optional[list[str]]) -> None:
    if cycle is not None:
        pytest.fail(f"import cycle: {cycle_text(cycle)}")


def _where(importer: str, target: str) -> str:
    """``module:line`` of the first import of ``target`` in ``importer`` (for messages)."""
    lines = [i.line for i in IMPORTS if i.importer == importer and i.target == target]
    return f"{importer}:{min(lines)}" if lines else importer


@pytest.mark.parametrize("entry", PRESENT)
def test_layer_order(entry: str) -> None:
    bad = [(s, d) for s, d in layer_violations(GRAPH, LAYERS) if top_level(s) == entry]
    lines = [f"{_where(s, d)} (layer {LAYERS[entry]}) imports {d} ({top_level(d)}, layer {LAYERS[top_level(d)]})"
             for s, d in bad]
    assert not bad, f"{entry} imports a higher layer:\n" + "\n".join(lines)


def test_every_top_level_entry_has_a_layer() -> None:
    unknown = unknown_top_levels(GRAPH, LAYERS)
    assert not unknown, (f"proxyscale.{', proxyscale.'.join(unknown)} not in the layer table: "
                         "add it to LAYERS in tests/test_layers.py")


def _modules_of(entry: str) -> list[str]:
    """The modules under one top-level entry of the real tree."""
    return [m for m in GRAPH if top_level(m) == entry]


@pytest.mark.parametrize("entry", NO_MODULE_LEVEL_TORCH)
def test_no_module_level_torch(entry: str) -> None:
    # followed through other modules: a module-level import of a torch module loads torch too
    chains = chains_into(module_level_graph(IMPORTS), _modules_of(entry), {"torch"})
    assert not chains, (f"{entry}/ loads torch at import time (import it inside the function):\n"
                        + "\n".join(map(cycle_text, chains)))


def test_report_never_imports_train() -> None:
    chains = chains_into(GRAPH, _modules_of("report"), set(_modules_of("train")))
    assert not chains, "report/ must not import proxyscale.train:\n" + "\n".join(map(cycle_text, chains))


# ------------------------------------------------------------------ the checker can fail
def test_checker_finds_a_cycle_in_a_synthetic_graph() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert find_cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    assert find_cycles({"p.a": {"p.b"}, "p.b": set()}) == []


def test_checker_finds_a_layer_violation_in_a_synthetic_graph() -> None:
    graph = {"p.store.io": {"p.data.x", "p.errors"}, "p.data.x": {"p.store.io"}, "p": {"p.cli"}}
    assert layer_violations(graph, LAYERS) == [("p.store.io", "p.data.x")]  # the root is exempt


def test_checker_flags_a_top_level_entry_missing_from_the_table() -> None:
    assert unknown_top_levels({"p.newpkg.m": set(), "p.data": set(), "p": set()}, LAYERS) == ["newpkg"]


def _write(root: Path, files: dict[str, str]) -> None:
    """Write a package of small files (relative path -> text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_resolves_relative_imports_in_a_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "a.py": "from . import b\nfrom .sub import leaf\nfrom .sub import NAME\n",
        "b.py": "def f():\n    from .a import g\n",  # a function-level import still closes the cycle
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import g\n"
                "else:\n    import pkg.sub\n",
        "sub/__init__.py": "NAME = 1\n",
        "sub/leaf.py": "from ..c import x\nimport torch\n",
    })
    graph = build_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b", "pkg.sub.leaf", "pkg.sub"}
    assert graph["pkg.c"] == {"pkg.sub"}  # the TYPE_CHECKING import does not count
    assert graph["pkg.sub.leaf"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
    # pkg.b reaches torch only through its function-level import, so only pkg.a loads it
    loads = module_level_graph(collect_imports(pkg))
    assert chains_into(loads, ["pkg.a", "pkg.b"], {"torch"}) == [["pkg.a", "pkg.sub.leaf", "torch"]]
    assert chains_into(graph, ["pkg.b", "pkg.c"], {"pkg.sub.leaf"}) == [["pkg.b", "pkg.a", "pkg.sub.leaf"]]


def test_nothing_is_unpickled() -> None:
    # stores, work directories and task arguments hold JSON, Parquet, .npy/.npz and safetensors:
    # a module that imports a pickle library could load code from a file someone else wrote.
    # joblib is allowed only for its process pool (Parallel, delayed, loky), never joblib.load
    picklers = {"pickle", "dill", "cloudpickle", "shelve", "marshal"}
    users = sorted({(i.importer, i.target) for i in IMPORTS if i.target.split(".")[0] in picklers})
    assert not users, users
    joblib_load = re.compile(r"joblib\.load\b|from joblib import [^\n]*\bload\b")
    loads = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if joblib_load.search(p.read_text("utf-8")))
    assert not loads, loads
