"""The package's shape, read from its source: no import cycles (function-level imports included), the
platform imports no method, and no platform code dispatches on a stage's task name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fieldkd"


def module_files(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file. ``from pkg import sub`` is an edge
    to the submodule only (the package object already exists while its submodules load)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            subs = {f"{target}.{a.name}" for a in node.names} & modules.keys()
            found |= subs if len(subs) == len(node.names) else subs | {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return (found & modules.keys()) - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycles_are_found_in_a_graph_with_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    modules = module_files(PACKAGE)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "fieldkd.platform.compute.students" in graph["fieldkd.platform.stages"]  # function-level imports count
    assert cycles(graph) == []


def test_the_platform_names_no_method_and_no_task_in_its_code():
    modules = module_files(PACKAGE)
    platform = {name: path for name, path in modules.items() if name.startswith("fieldkd.platform")}
    for name, path in platform.items():
        assert not any(m.startswith("fieldkd.methods") for m in imports_of(name, path, modules)), name
        code = path.read_text()
        assert not re.search(r"\.task\s*(==|!=|in)\s*[\"'(]", code), f"{name} dispatches on a task name"
