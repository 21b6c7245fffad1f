"""The package's shape: module size, an acyclic import graph, no hidden imports, one home for
``SECMW_``."""

from __future__ import annotations

import ast
import functools
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import secmw

ROOT = Path(secmw.__file__).parent
MAX_LINES = 400
ENV_PREFIX = "SECMW_"
# Where environment variable names may be spelled: the settings package, and the tools that
# print or set them for the user.
ENV_HOMES = ("config/", "cli.py", "demo/")


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


MODULES = dict(_modules())


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: the body and its try/if blocks, not functions,
    classes or ``if TYPE_CHECKING:``."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _type_checking(node):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)


def _targets(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The secmw modules an import runs: the named module, its parent packages below ``secmw``
    (importing ``secmw.a.b`` runs ``secmw/a/__init__.py`` first), and for ``from m import x``,
    ``m.x`` when that is a module."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        named = [base] + [f"{base}.{alias.name}" for alias in node.names]
    found = set()
    for module in named:
        parts = module.split(".")
        # The root package is the public façade: every module runs it first, so it is no edge;
        # nor is a package that holds the importing module (its __init__ already runs).
        for end in range(2, len(parts) + 1):
            candidate = ".".join(parts[:end])
            if candidate in MODULES and not (name + ".").startswith(candidate + "."):
                found.add(candidate)
    return found


@functools.cache
def _trees() -> dict[str, ast.Module]:
    """Every module's tree, parsed once with the garbage collector held off: CPython 3.11 raises
    "AST constructor recursion depth mismatch" when a finalizer of an earlier test's leftovers
    runs in the middle of building a tree."""
    gc.collect()
    gc.disable()
    try:
        return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}
    finally:
        gc.enable()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, tree in _trees().items():
        edges: set[str] = set()
        for node in _module_level_imports(tree):
            edges |= _targets(name, node)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                return [*path[path.index(following) :], following]
            if following not in state and (found := visit(following)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_over_the_size_limit() -> None:
    """Every module in src/secmw has at most 400 lines."""
    long = {
        name: count
        for name, path in MODULES.items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_module_level_imports_are_acyclic() -> None:
    """No secmw module imports itself back through others (``TYPE_CHECKING`` imports aside)."""
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_names_a_cycle() -> None:
    """The check above can fail: a two-module loop is reported with its modules."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _function_level_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    top = {id(node) for node in _module_level_imports(tree)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            module = "." * node.level + (node.module or "")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
        elif isinstance(node, ast.Import):
            module = ",".join(alias.name for alias in node.names)
        else:
            continue
        inside = id(node) not in top and not _in_type_checking(tree, node)
        if inside and (module.startswith((".", "secmw")) or ",secmw" in module):
            yield node.lineno, module


def _in_type_checking(tree: ast.Module, target: ast.stmt) -> bool:
    return any(
        isinstance(node, ast.If)
        and _type_checking(node)
        and any(child is target for child in ast.walk(node))
        for node in tree.body
    )


def test_no_function_level_secmw_imports() -> None:
    """secmw modules import each other at the top, never inside a function to dodge a cycle."""
    hidden = [
        f"{name}:{line} {module}"
        for name, tree in _trees().items()
        for line, module in _function_level_imports(tree)
    ]
    assert hidden == []


@pytest.mark.parametrize(
    "name", sorted(name for name, path in MODULES.items() if path.name != "__init__.py")
)
def test_features_do_not_import_config(name: str) -> None:
    """Only the drivers, integrations and tools read settings through ``secmw.config``."""
    readers = ("secmw.asgi", "secmw.wsgi", "secmw.config", "secmw.cli", "secmw.demo")
    readers += ("secmw.middleware",)  # the public classes' arguments, shared by both drivers
    integrations = ("secmw.fastopenapi", "secmw.fastapi", "secmw.flask")
    inside = tuple(i + "." for i in integrations)
    if name.startswith(readers) or name in integrations or name.startswith(inside):
        return
    tree = _trees()[name]
    edges = {target for node in _module_level_imports(tree) for target in _targets(name, node)}
    assert not {edge for edge in edges if edge.startswith("secmw.config")}


def test_only_config_spells_the_environment_prefix() -> None:
    """``SECMW_`` appears only in config/ (and the CLI and demo): features name a setting by its
    path, and config/ turns the path into the variable."""
    spelled = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in MODULES.values()
        if not str(path.relative_to(ROOT)).startswith(ENV_HOMES)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ENV_PREFIX in line
    ]
    assert spelled == []
