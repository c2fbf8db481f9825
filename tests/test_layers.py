"""The import layers, read from the source with ast: who imports whom, no cycles, libraries per extra.

common is the contract and imports nothing of ours; core, agent and desktop import only common
and themselves; servermanager's own modules (cli, demo) sit on top. Imports inside functions
count as much as those at the top of a module: they run too, only later.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "servermanager"
# The parts, each a top-level folder that servermanager/ links to, and the parts each may import.
PARTS = {"common": set(), "core": {"common"}, "agent": {"common"}, "desktop": {"common"}}
TOP = "top"  # servermanager's own modules: cli, demo, __main__
# Besides the stdlib, each part may import the base dependencies and its own extra's (read from
# pyproject.toml), and the top only the base ones. Beyond those, what an extra brings along and
# the part uses directly: numpy comes with pyqtgraph.
BROUGHT_ALONG = {"desktop": {"numpy"}}
# Optional extras a part (or the top: `servermanager sign`) may import lazily (inside a function,
# with its absence handled).
OPTIONAL_EXTRAS = {"core": ("apprise",), TOP: ("sign",)}
SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported, resolved: `from a import b` is a.b when that is a module
    name: str | None  # what `from target import name` takes, when name is not itself a module
    path: Path
    line: int
    in_function: bool
    type_checking: bool  # under `if TYPE_CHECKING:`, so never run

    @property
    def where(self) -> str:
        place = "in a function" if self.in_function else "at module level"
        return f"{self.path.relative_to(REPO)}:{self.line}, {place}"

    def describe(self) -> str:
        return f"{self.source} imports {self.target} ({self.where})"


def parts_folders() -> dict[str, Path]:
    """servermanager.<name> -> the real folder, from the links in servermanager/."""
    links = {}
    for entry in sorted((REPO / NAMESPACE).iterdir()):
        if entry.is_symlink() and entry.is_dir():
            links[f"{NAMESPACE}.{entry.name}"] = entry.resolve()
    return links


def python_files(folder: Path) -> Iterator[Path]:
    """The .py files under folder, not following links (servermanager/'s point at the parts)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and not (Path(root) / d).is_symlink()
            and not (Path(root) / d / "pyvenv.cfg").exists()
        )
        yield from (Path(root) / f for f in sorted(files) if f.endswith(".py"))


def module_name(package: str, folder: Path, path: Path) -> str:
    rel = path.relative_to(folder).with_suffix("").parts
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join((package, *rel))


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module

    def raw_imports(self) -> Iterator[tuple[str, str | None, int, bool, bool]]:
        """(module, name or None, line, in_function, type_checking) of every import statement."""

        def visit(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[tuple]:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, None, node.lineno, in_function, type_checking
                return
            if isinstance(node, ast.ImportFrom):
                base = self.absolute(node.module, node.level)
                for alias in node.names:
                    yield base, alias.name, node.lineno, in_function, type_checking
                return
            if isinstance(node, ast.If) and is_type_checking(node.test):
                for stmt in node.body:
                    yield from visit(stmt, in_function, True)
                for stmt in node.orelse:
                    yield from visit(stmt, in_function, type_checking)
                return
            # A class body runs at import, like the module's; a function's only when called.
            inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            for child in ast.iter_child_nodes(node):
                yield from visit(child, inner, type_checking)

        yield from visit(self.tree, False, False)

    def absolute(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        package = self.name if self.is_package else self.name.rpartition(".")[0]
        for _ in range(level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{module}" if module else package

    def defined_names(self) -> set[str]:
        """Names bound at module level (in its if/try/with/for blocks too), to check `from m import x`."""
        names: set[str] = set()

        def bind(target: ast.AST | None) -> None:
            for node in ast.walk(target) if target is not None else ():
                if isinstance(node, ast.Name):
                    names.add(node.id)

        def visit(body: list[ast.stmt]) -> None:
            for node in body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(node.name)
                    continue
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names.update(a.asname or a.name.partition(".")[0] for a in node.names)
                    continue
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        bind(target)
                elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
                    bind(node.target)
                elif isinstance(node, ast.With | ast.AsyncWith):
                    for item in node.items:
                        bind(item.optional_vars)
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

        visit(self.tree.body)
        if "__getattr__" in names:  # a module-level __getattr__ answers any name, as `import *` may
            names.add("*")
        return names


def load_file(name: str, path: Path) -> Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return Module(name, path, path.name == "__init__.py", tree)


def load(package: str, folder: Path) -> list[Module]:
    return [load_file(module_name(package, folder, path), path) for path in python_files(folder)]


@functools.cache
def product() -> dict[str, Module]:
    """Every module of the installed namespace, by its servermanager.* name."""
    modules = load(NAMESPACE, REPO / NAMESPACE)
    for package, folder in parts_folders().items():
        modules += load(package, folder)
    return {m.name: m for m in modules}


@functools.cache
def product_imports() -> list[Import]:
    modules = product()
    found = []
    for module in modules.values():
        for target, name, line, in_function, type_checking in module.raw_imports():
            if name is not None and f"{target}.{name}" in modules:
                target, name = f"{target}.{name}", None
            found.append(Import(module.name, target, name, module.path, line, in_function, type_checking))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PARTS else TOP


def ours(module: str) -> bool:
    return module == NAMESPACE or module.startswith(NAMESPACE + ".")


# Distributions whose import names are not their own name (up to case and "-"/"_").
IMPORT_NAMES = {
    "pyside6_essentials": {"pyside6"},
    # Windows only: the agent's Windows service (agent/winservice.py).
    "pywin32": {"win32service", "win32serviceutil", "servicemanager", "pywintypes"},
}


def requirement_names(requirements: list[str]) -> set[str]:
    """Import names are the distributions' names here, up to case (pyside6 is PySide6), or IMPORT_NAMES."""
    names = set()
    for req in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", req)
        assert match, req
        name = match.group(0).lower().replace("-", "_")
        names |= IMPORT_NAMES.get(name, {name})
    return names


@functools.cache
def allowed_libraries() -> dict[str, set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    allowed = {TOP: base | optional_libraries(TOP), "common": base}
    for part in ("core", "agent", "desktop"):
        allowed[part] = base | requirement_names(extras[part]) | BROUGHT_ALONG.get(part, set())
        for optional in OPTIONAL_EXTRAS.get(part, ()):
            allowed[part] |= requirement_names(extras[optional])
    return allowed


def optional_libraries(part: str) -> set[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {name for opt in OPTIONAL_EXTRAS.get(part, ()) for name in requirement_names(extras[opt])}


# ---------------------------------------------------------------- tests


def test_the_namespace_links_exactly_the_parts() -> None:
    # A new part needs its row in PARTS (whom it may import) and in allowed_libraries (its extra).
    assert set(parts_folders()) == {f"{NAMESPACE}.{p}" for p in PARTS}
    assert {layer(m) for m in product()} == {*PARTS, TOP}
    assert f"{NAMESPACE}.cli" in product() and f"{NAMESPACE}.agent.main" in product()


def test_parts_import_only_common_and_themselves() -> None:
    bad = []
    for imp in product_imports():
        if not ours(imp.target):
            continue
        source, target = layer(imp.source), layer(imp.target)
        if source == TOP or target == source or target in PARTS[source]:
            continue
        may = " and ".join(sorted({source, *PARTS[source]}))
        bad.append(f"{imp.describe()}: {source} may import only {may}")
    if bad:
        pytest.fail("imports across the layers:\n  " + "\n  ".join(bad), pytrace=False)


def test_nothing_imports_the_bare_folder_names() -> None:
    # The folders are importable from the repository root by accident only: installed, only
    # servermanager.* exists. Tests, benchmarks and scripts are held to this too.
    modules = list(product().values())
    for folder in sorted(p for p in REPO.iterdir() if p.is_dir() and p.name in {"tests", "benchmarks"}):
        modules += load(folder.name, folder)
    modules += [load_file(path.stem, path) for path in sorted(REPO.glob("*.py"))]
    bad = [
        f"{m.name} imports {target} ({m.path.relative_to(REPO)}:{line})"
        for m in modules
        for target, _, line, _, _ in m.raw_imports()
        if target.partition(".")[0] in PARTS
    ]
    if bad:
        pytest.fail(
            "bare top-level names (import servermanager.<part> instead):\n  " + "\n  ".join(bad),
            pytrace=False,
        )


def test_imports_of_our_modules_name_modules_that_exist() -> None:
    # A function-level import of a moved module fails only when that function first runs.
    modules = product()
    bad = []
    for imp in product_imports():
        if not ours(imp.target):
            continue
        if imp.target not in modules:
            bad.append(f"{imp.describe()}: no such module")
        elif imp.name not in (None, "*") and not {imp.name, "*"} & modules[imp.target].defined_names():
            bad.append(f"{imp.describe()}: it has no {imp.name}")
    if bad:
        pytest.fail("imports of nothing:\n  " + "\n  ".join(bad), pytrace=False)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of graph, those of more than one module or with an edge to itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def cycles(deferred: bool) -> str:
    """The import cycles among our modules, each with the edges that close it; "" when none.

    Imports under TYPE_CHECKING never run and are left out; those in functions (deferred until
    first use) are counted when deferred is true."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in product_imports():
        if imp.type_checking or (imp.in_function and not deferred):
            continue
        if ours(imp.target) and imp.target in product():
            edges.setdefault((imp.source, imp.target), []).append(imp)
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    report = []
    for component in strongly_connected(graph):
        members = set(component)
        lines = [
            f"    {imp.source} -> {imp.target} ({imp.where})"
            for (source, target), imps in sorted(edges.items())
            if source in members and target in members
            for imp in imps[:1]
        ]
        report.append(f"  cycle among {', '.join(component)}:\n" + "\n".join(lines))
    return "\n".join(report)


def test_module_level_imports_have_no_cycle() -> None:
    # What runs at import: in a cycle the import order decides which names exist yet.
    report = cycles(deferred=False)
    if report:
        pytest.fail("module-level import cycles:\n" + report, pytrace=False)


def test_deferred_imports_close_no_cycle_either() -> None:
    # An import deferred into a function (to keep start-up lean) must still point one way: a
    # module that the other imports back is one module in two files, not two layers.
    report = cycles(deferred=True)
    if report:
        pytest.fail("import cycles through imports in functions:\n" + report, pytrace=False)


def test_cycle_finder_finds_a_cycle_and_only_that() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["d"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_each_part_imports_only_the_stdlib_and_its_extras_libraries() -> None:
    allowed = allowed_libraries()
    bad = []
    for imp in product_imports():
        top = imp.target.partition(".")[0]
        if ours(imp.target) or top in sys.stdlib_module_names:
            continue
        part = layer(imp.source)
        if top.lower() not in allowed[part]:
            bad.append(f"{imp.describe()}: {part} may use only {', '.join(sorted(allowed[part]))}")
        elif not (imp.in_function or imp.type_checking) and top.lower() in optional_libraries(part):
            bad.append(f"{imp.describe()}: an optional extra's library is imported inside a function")
    if bad:
        pytest.fail("third-party imports outside the part's extra:\n  " + "\n  ".join(bad), pytrace=False)


def test_the_extras_allow_what_the_parts_are_built_on() -> None:
    # The rule above reads pyproject.toml; this pins what it reads to the product's design.
    allowed = allowed_libraries()
    assert allowed["common"] == {"msgspec", "platformdirs"}
    assert {"psutil", "websockets"} <= allowed["agent"]
    # The agent checks a certificate pin with the standard library; cryptography is there only to
    # verify signed commands (and read a checked server's certificate date), imported only then.
    assert not {"aiosqlite", "pyside6"} & allowed["agent"]
    # aiohttp and icmplib run [[check]] and [[scrape]] entries; tests/agent/test_imports.py pins
    # that an agent without any never imports them.
    assert {"aiohttp", "icmplib"} <= allowed["agent"]
    assert {"aiohttp", "aiosqlite", "uvloop", "cryptography"} <= allowed["core"]
    assert not {"psutil", "pyside6"} & allowed["core"]
    assert {"pyside6", "qasync", "pyqtgraph", "keyring", "numpy"} <= allowed["desktop"]
    assert not {"psutil", "aiosqlite"} & allowed["desktop"]
    # Signed commands: the agent verifies, the desktop and the CLI (lazily, the `sign` extra) sign.
    assert "cryptography" in allowed["agent"] & allowed["desktop"] & allowed[TOP]
    assert optional_libraries(TOP) == {"cryptography"}
