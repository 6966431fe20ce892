"""The package's layers, read from its imports with ``ast``: what may import what.

``bulkpost`` is a stack of subpackages: ``core`` (pure) → ``reading`` → ``storage`` →
``delivery`` → ``onboarding`` → ``runner`` → ``cli`` and the Python API (``bulkpost.api``,
the package itself); ``bulkpost.errors`` lies under them all, and the ``sandbox`` stands
beside them on ``core`` alone. Every import counts, type-only and function-local ones
included: an import may point down the stack or across its own layer, never up, and no
modules import each other in a loop. A ``core`` module imports no I/O (asyncio, aiohttp,
sqlite3, files, sockets, threads, logs), except for a name only a type hint uses.

The checks are functions of a set of parsed modules, so the tests below also show them
failing on a package made to break each rule.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bulkpost"

# Bottom to top. A module is in the layer of its first subpackage; a top-level module
# (``errors``, ``api``, the package) has a rank of its own.
ORDER = ["bulkpost.errors", "bulkpost.core", "bulkpost.reading", "bulkpost.storage",
         "bulkpost.delivery", "bulkpost.onboarding", "bulkpost.runner", "bulkpost.api",
         "bulkpost.cli", "bulkpost", "bulkpost.__main__"]
SANDBOX = "bulkpost.sandbox"  # beside the stack: it imports only the core and errors
SANDBOX_MAY_IMPORT = {"bulkpost.errors", "bulkpost.core", SANDBOX}
SANDBOX_IMPORTED_BY = {"bulkpost.cli"}

# What a core module may not import, even deep in a function: I/O and its machinery.
IO_MODULES = frozenset({
    "aiohttp", "aiolimiter", "asyncio", "click", "fcntl", "filelock", "logging", "mmap",
    "msvcrt", "multiprocessing", "os", "pandas", "platformdirs", "pyarrow", "select",
    "selectors", "shutil", "signal", "socket", "sqlite3", "ssl", "structlog", "subprocess",
    "sys", "tempfile", "threading", "tqdm", "urllib.request", "http",
})
# ... but a type hint may name these (under ``if TYPE_CHECKING:``), as nothing runs there.
TYPE_ONLY_OK = frozenset({"pathlib", "pyarrow", "pandas"})
IO_IN_CORE = IO_MODULES | {"pathlib"}


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (for ``from X import name``, X, or X.name a module)
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def read_imports(name: str, source: str, modules: set[str]) -> list[Import]:
    """Every import of one module, resolved to dotted module names."""
    tree = ast.parse(source)
    typed = _type_checking_lines(tree)
    is_package = name in modules and any(m.startswith(name + ".") for m in modules)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno, node.lineno in typed)
                      for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append(Import(name, target if target in modules else base,
                                    node.lineno, node.lineno in typed))
    return found


def read_package(root: Path) -> dict[str, str]:
    """Module name → source, for every module under ``root``."""
    return {module_name(path, root): path.read_text(encoding="utf-8")
            for path in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> str:
    if module == SANDBOX or module.startswith(SANDBOX + "."):
        return SANDBOX
    for layer in sorted(ORDER, key=len, reverse=True):
        if layer != "bulkpost" and (module == layer or module.startswith(layer + ".")):
            return layer
    return "bulkpost" if module == "bulkpost" else module


def _is(module: str, names: frozenset[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def violations(sources: dict[str, str]) -> list[str]:
    """What breaks the layers in these modules, one line each; empty when nothing does."""
    modules = set(sources)
    imports = [imp for name, source in sources.items()
               for imp in read_imports(name, source, modules)]
    found: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
        own = layer_of(imp.importer)
        if not imp.imported.startswith("bulkpost"):
            if own == "bulkpost.core" and _is(imp.imported, IO_IN_CORE) and not (
                    imp.type_only and _is(imp.imported, TYPE_ONLY_OK)):
                found.append(f"{where}: I/O in the core")
            continue
        if imp.imported not in modules:
            continue  # a name of the package itself (``from bulkpost import __version__``)
        if imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
        theirs = layer_of(imp.imported)
        if own == SANDBOX or theirs == SANDBOX:
            if own == SANDBOX and theirs not in SANDBOX_MAY_IMPORT:
                found.append(f"{where}: the sandbox imports only the core and errors")
            if theirs == SANDBOX and own not in SANDBOX_IMPORTED_BY | {SANDBOX}:
                found.append(f"{where}: only the CLI starts the sandbox")
            continue
        if own == "bulkpost.core" and theirs not in ("bulkpost.core", "bulkpost.errors"):
            found.append(f"{where}: the core imports only the core and errors")
        elif own in ORDER and theirs in ORDER and ORDER.index(theirs) > ORDER.index(own):
            found.append(f"{where}: up the layers ({theirs} is above {own})")
    found += [f"a loop of imports: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_loop(graph, group) for group in groups]


def _loop(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    return group


# -- the package as it is ------------------------------------------------------------------
def test_the_package_keeps_its_layers() -> None:
    assert violations(read_package(PACKAGE)) == []


def test_every_module_is_in_a_layer() -> None:
    known = set(ORDER) | {SANDBOX}
    strays = [name for name in read_package(PACKAGE) if layer_of(name) not in known]
    assert strays == []


def test_every_layer_says_what_it_owns_and_may_import() -> None:
    for layer in [*ORDER[1:7], SANDBOX]:
        init = PACKAGE / layer.removeprefix("bulkpost.").replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert doc, f"{init} has no docstring"
        if layer != SANDBOX:
            assert "May import" in doc, f"{init} does not say what the layer may import"


# -- the checks fail where they should ------------------------------------------------------
def _package(**modules: str) -> dict[str, str]:
    return {name.replace("__", "."): textwrap.dedent(source)
            for name, source in modules.items()}


CLEAN = dict(
    bulkpost="",
    bulkpost__errors="",
    bulkpost__core="",
    bulkpost__core__rows="from bulkpost.errors import UsageError\n",
    bulkpost__delivery="",
    bulkpost__delivery__calls="import asyncio\nfrom bulkpost.core.rows import Row\n",
    bulkpost__runner="",
    bulkpost__runner__pipeline="from bulkpost.delivery import calls\n",
    bulkpost__sandbox="",
    bulkpost__sandbox__app="from bulkpost.core.rows import Row\n",
)


def test_a_clean_package_passes() -> None:
    assert violations(_package(**CLEAN)) == []


@pytest.mark.parametrize(("module", "source", "said"), [
    ("bulkpost__core__rows", "from bulkpost.delivery.calls import call\n",
     "the core imports only the core and errors"),
    ("bulkpost__core__rows", "def f():\n    from bulkpost.runner import pipeline\n",
     "the core imports only the core and errors"),
    ("bulkpost__core__rows", "import asyncio\n", "I/O in the core"),
    ("bulkpost__core__rows", "import sqlite3\n", "I/O in the core"),
    ("bulkpost__core__rows", "from os import path\n", "I/O in the core"),
    ("bulkpost__core__rows", "from pathlib import Path\n", "I/O in the core"),
    ("bulkpost__delivery__calls", "from bulkpost.runner.pipeline import Run\n",
     "up the layers"),
    ("bulkpost__delivery__calls",
     ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
      "    from bulkpost.runner import pipeline\n"),
     "up the layers"),
    ("bulkpost__sandbox__app", "from bulkpost.delivery.calls import call\n",
     "the sandbox imports only the core and errors"),
    ("bulkpost__delivery__calls", "from bulkpost.sandbox import app\n",
     "only the CLI starts the sandbox"),
])
def test_a_wrong_way_import_is_caught(module: str, source: str, said: str) -> None:
    broken = _package(**{**CLEAN, module: source})
    found = violations(broken)
    assert any(said in line for line in found), found


def test_a_type_hint_may_name_a_path_in_the_core() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pathlib import Path\n"
    assert violations(_package(**{**CLEAN, "bulkpost__core__rows": source})) == []


def test_a_loop_is_caught_even_through_type_only_imports() -> None:
    looped = _package(**{
        **CLEAN,
        "bulkpost__core__a": "from bulkpost.core.b import B\n",
        "bulkpost__core__b": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from bulkpost.core.a import A\n"),
    })
    assert violations(looped) == [
        "a loop of imports: bulkpost.core.a -> bulkpost.core.b -> bulkpost.core.a"]


def test_a_relative_import_is_read_as_the_module_it_names() -> None:
    broken = _package(**{**CLEAN, "bulkpost__core__rows": "from ..runner import pipeline\n"})
    assert any("imports bulkpost.runner.pipeline" in line for line in violations(broken))
