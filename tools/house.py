"""The house rules ruff does not check, over the library packages (docs/DESIGN.md, "House rules"):

- no function longer than 80 lines (ruff holds complexity ≤ 15 and ≤ 3 positional parameters);
- no import cycle between packages: each module stands for its package, an import is an arrow from the
  importer's package to the imported module's package, and arrows between a package and its own
  subpackages are left out (a parent wires its children). Entry points (``__main__``) stand above all.

    python tools/house.py          # exit 1 and one line per breach
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("memguard",)  # the entry-point packages dedup/, train/, extract/ are shims above it
MAX_FUNCTION_LINES = 80


def library_modules(root: Path = REPO) -> Iterator[tuple[str, Path]]:
    for top in LIBRARY:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def long_functions(root: Path = REPO, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for _, path in library_modules(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {node.name} is {lines} lines (> {limit})")
    return found


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)  # ``from pkg import module``


def package_graph(root: Path = REPO) -> nx.DiGraph:
    modules = {name: path for name, path in library_modules(root)}
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}

    def package_of(name: str) -> str:
        return name if name in packages else name.rpartition(".")[0]

    graph = nx.DiGraph()
    for name, path in modules.items():
        if name.endswith("__main__"):
            continue
        source = package_of(name)
        for imported in _imports(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            if imported not in modules or imported.endswith("__main__"):
                continue
            target = package_of(imported)
            related = source == target or source.startswith(target + ".") or target.startswith(source + ".")
            if not related:
                graph.add_edge(source, target, via=f"{name} → {imported}")
    return graph


def import_cycles(root: Path = REPO) -> list[str]:
    graph = package_graph(root)
    found = []
    for cycle in nx.simple_cycles(graph):
        ring = [*cycle, cycle[0]]
        via = "; ".join(graph.edges[a, b]["via"] for a, b in itertools.pairwise(ring))
        found.append(f"package cycle {' → '.join(ring)} ({via})")
    return found


def main() -> int:
    breaches = long_functions() + import_cycles()
    for line in breaches:
        print(line)
    return 1 if breaches else 0


if __name__ == "__main__":
    raise SystemExit(main())
