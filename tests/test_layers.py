"""The shared layer has a bottom: its import graph, function-level imports included, has no cycle.

The shared layer is config, errors, retry, secrets, references, files, paths, http and the
tokens package. Read from the source with ``ast`` (nothing is imported), so an import hidden
in a function to dodge a cycle counts like any other. Imports of third-party packages inside
functions (heavy or optional ones: requests, authlib, nbformat, liboidcagent) are not
nbplugins modules and are left out.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "nbplugins"
LAYER = ("config", "errors", "retry", "secrets", "references", "files", "paths", "http", "tokens")

# Function-level imports still allowed, each with the reason it is there and when it goes.
TRANSITIONAL: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in LAYER:
        package = ROOT / name
        for path in sorted(package.glob("*.py")) if package.is_dir() else [ROOT / f"{name}.py"]:
            found[_module_name(path)] = path
    return found


def _known_modules() -> set[str]:
    return {_module_name(path) for path in ROOT.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> list[tuple[str, bool, int]]:
    """The nbplugins modules ``path`` imports: (module, imported inside a function, line)."""
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner, child.lineno) for alias in child.names
                             if alias.name.split(".")[0] == "nbplugins")
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module \
                    and child.module.split(".")[0] == "nbplugins":
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if sub in known else child.module, inner, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Edges of the layer (module -> the layer modules it imports) and its function-level imports."""
    known = _known_modules()
    files = _layer_files()
    edges: dict[str, set[str]] = {name: set() for name in files}
    lazy: list[tuple[str, str, int]] = []
    for name, path in files.items():
        for target, in_function, line in _imports(path, known):
            if target in files and target != name:
                edges[name].add(target)
            if in_function:
                lazy.append((name, target, line))
    return edges, lazy


def test_the_layer_modules_are_all_found():
    edges, _ = _graph()
    assert {"nbplugins.secrets", "nbplugins.files", "nbplugins.references", "nbplugins.tokens",
            "nbplugins.tokens.resolver", "nbplugins.http"} <= set(edges)


def test_the_shared_layer_has_no_function_level_imports():
    _, lazy = _graph()
    unexpected = [f"{module} line {line} imports {target}" for module, target, line in lazy
                  if (module, target) not in TRANSITIONAL]
    assert not unexpected, "imports inside functions in the shared layer: " + "; ".join(unexpected)


def test_the_shared_layer_import_graph_has_no_cycle():
    edges, _ = _graph()
    graph = {name: targets - {t for (m, t) in TRANSITIONAL if m == name} for name, targets in edges.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(reversed(exc.args[1]))  # graphlib lists each module before the one importing it
        raise AssertionError(f"import cycle in the shared layer (A -> B: A imports B): {cycle}") from None
    assert len(order) == len(graph)


def test_the_scrubber_imports_nothing_of_nbplugins_and_retry_knows_no_config():
    known = _known_modules()
    secrets = [t for t, _, _ in _imports(ROOT / "secrets.py", known)
               if ("nbplugins.secrets", t) not in TRANSITIONAL]
    assert secrets == []
    assert all(t != "nbplugins.config" for t, _, _ in _imports(ROOT / "retry.py", known))


def test_the_shared_layer_imports_nothing_above_it():
    known = _known_modules()
    files = _layer_files()
    above = sorted({f"{name} imports {target}" for name, path in files.items()
                    for target, _, _ in _imports(path, known) if target not in files and target != "nbplugins"})
    assert not above, above
