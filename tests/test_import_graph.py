"""Every package of stealkit reads top-down: no two of its modules import each other, directly or around a
circle. Counted as `farm-studio look` counts them, from the code's own imports (parsed, nothing run): an
import inside a function counts (a lazy import hides a circle, it does not break it), one under
`if TYPE_CHECKING:` does not, and a package's __init__.py (its face, which imports the modules to register
them) is left out. tests/test_architecture.py holds the layers between packages."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "stealkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imported_modules(source: str, name: str) -> set[str]:
    """The stealkit modules that module `name` (its source) imports anywhere, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(source, name)
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = name.split(".")  # a module's name: `from . import x` is relative to its package
            base = node.module if node.level == 0 else ".".join(parts[: len(parts) - node.level] + [node.module or ""]).rstrip(".")
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return out & set(MODULES)


def package_of(module: str) -> str:
    return module.rsplit(".", 1)[0]


def package_graph() -> dict[str, set[str]]:
    """module -> the modules of its own package that it imports (package faces left out)."""
    return {m: {o for o in imported_modules(p.read_text(), m) if o != m and package_of(o) == package_of(m) and MODULES[o].name != "__init__.py"}
            for m, p in MODULES.items() if p.name != "__init__.py"}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_package_has_an_import_circle():
    graph = package_graph()
    found = circles(graph)
    detail = ["  " + " | ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in found]
    assert not found, "modules that import each other (move what both need to a module below them):\n" + "\n".join(detail)


def test_the_check_sees_a_circle_through_a_lazy_import():
    """The two circles this test was written for ran through imports inside functions: it must see those."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stealkit.attacks import base\n"
              "def f():\n    from stealkit.attacks.trainer import train_stolen_encoder\n    from . import queries\n")
    assert imported_modules(source, "stealkit.attacks.lazy") == {"stealkit.attacks.trainer", "stealkit.attacks.queries"}
    assert circles({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}) == [["p.a", "p.b", "p.c"]]
