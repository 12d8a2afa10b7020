"""The import graph of Dust's packages: layers that only point down, no cycle.

Read from the source with ``ast`` (nothing is imported): every ``import`` of a ``dust``
module, at module level or inside a function, is an arrow from the importing file to the
imported one. The layers, from the top (what a person or the broker starts) to the bottom
(what everything uses), are in ``LAYERS``; docs/ARCHITECTURE.md describes them.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Top to bottom. A package may import its own modules and those of lower layers only.
#: Packages on one line form one layer and do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),  # entry points: `dust` and its demo
    ("runtime",),  # the worker process around the tasks: consumer, batching, health, hooks
    ("tasks",),  # Celery tasks
    ("inbox", "runs"),  # exactly-once events; recorded job runs
    ("subscribers",),  # one per event
    ("ledger",),  # every change to balances, holds and lots
    ("models",),  # tables and migrations
    ("worker",),  # settings, database, the Celery app, names, transports
]
LEVEL = {package: level for level, layer in enumerate(LAYERS) for package in layer}


def package_dirs() -> dict[str, Path]:
    """``dust.<package>`` -> its folder, as pyproject.toml installs them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = config["tool"]["setuptools"]["package-dir"]
    return {
        name.split(".")[1]: ROOT / folder
        for name, folder in folders.items()
        if name.count(".") == 1
    }


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if "migrations" in parts:  # Alembic's scripts, loaded by Alembic itself
                continue
            found["dust." + ".".join(parts)] = path
    return found


MODULES = modules()


def arrows() -> list[tuple[str, str, int, bool, str]]:
    """(importer, imported, line, inside a function, the line's text) for every import of
    a Dust module by a Dust module."""
    found = []
    for name, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                # ``from dust.x import y``: y is a module, or a name in module dust.x
                while target and target not in MODULES:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "dust":
                    text = lines[node.lineno - 1]
                    found.append((name, target, node.lineno, id(node) in in_function, text))
    return found


ARROWS = arrows()


def package_of(module: str) -> str:
    return module.split(".")[1]


def test_every_package_has_a_layer() -> None:
    assert set(package_dirs()) == set(LEVEL), "a package without a layer (add it to LAYERS)"
    assert len(MODULES) > 50


def test_no_arrow_points_up() -> None:
    upward = [
        f"{importer} -> {imported} (line {line})"
        for importer, imported, line, _, _ in ARROWS
        if LEVEL[package_of(imported)] < LEVEL[package_of(importer)]
    ]
    assert upward == []


def test_packages_of_one_layer_do_not_import_each_other() -> None:
    sideways = [
        f"{importer} -> {imported}"
        for importer, imported, _, _, _ in ARROWS
        if package_of(importer) != package_of(imported)
        and LEVEL[package_of(imported)] == LEVEL[package_of(importer)]
    ]
    assert sideways == []


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for after in sorted(graph.get(node, ())):
            if state.get(after) == 1:
                return stack[stack.index(after) :] + [after]
            if after not in state and (found := visit(after)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_cycle_between_files() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported, _, _, _ in ARROWS:
        # a package's __init__ is imported before any of its modules: not an arrow back
        if not importer.startswith(imported + "."):
            graph[importer].add(imported)
    assert cycle(graph) is None


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported, _, _, _ in ARROWS:
        if package_of(importer) != package_of(imported):
            graph[package_of(importer)].add(package_of(imported))
    assert cycle(graph) is None


def test_imports_inside_functions_are_rare_and_say_why() -> None:
    """An import inside a function must not hide a cycle, nor anything else: each one (of
    Dust's modules or a library's) says why it is lazy (``# lazy: ...`` on its line)."""
    hidden = []
    for name, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        if "# lazy:" not in lines[node.lineno - 1]:
                            hidden.append(f"{name}:{node.lineno}")
    assert hidden == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": {"b"}, "b": {"c"}}, None), ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"])],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[str] | None
) -> None:
    assert cycle(graph) == expected


#: The writers of entries (ledger/journal.py says so in its docstring).
ENTRY_WRITERS = {"dust.ledger.journal", "dust.ledger.expiry"}


def test_entries_are_written_in_the_ledger_journal_and_expiry_only() -> None:
    """An ``Entry(...)`` made, or an INSERT into ``dust_entries``, anywhere else is a
    second writer the journal's invariants do not cover."""
    writers = set()
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        entry_table = {"Entry"}
        for node in ast.walk(tree):
            # ``E = Entry.__table__``: E is the table too
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "__table__"
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "Entry"
            ):
                entry_table |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            first = node.args[0] if node.args else None
            if called == "Entry":
                writers.add(name)
            elif called in ("insert", "insert_rows") and first is not None:
                table = ast.unparse(first)
                if (
                    table in entry_table
                    or table == "Entry.__table__"
                    or (
                        called == "insert_rows"
                        and len(node.args) > 1
                        and ast.unparse(node.args[1]) in {"Entry.__table__", *entry_table}
                    )
                ):
                    writers.add(name)
    assert writers == ENTRY_WRITERS
