"""The modules of landscape_core import one way: no module reaches itself through imports,
whether they run at load time or inside a function (a deferred import that closes a circle
still ties the two modules together and breaks when either is split or reordered)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "landscape_core"


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of landscape_core it imports}``, from every import statement in its source."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or node.module == "landscape_core"):
                if node.module and node.module != "landscape_core":
                    targets.add(node.module.split(".")[0])
                else:
                    targets |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("landscape_core."):
                targets.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                targets |= {a.name.split(".")[1] for a in node.names if a.name.startswith("landscape_core.")}
        graph[path.stem] = (targets & modules) - {path.stem, "__init__"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_the_cycle_finder_finds_a_deferred_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_landscape_core_has_no_import_cycles():
    graph = import_graph()
    assert {"directions", "hessian", "evaluate", "problem"} <= set(graph)  # the graph was read
    assert "hessian" in graph["directions"]  # directions collects the makers...
    assert "directions" not in graph["hessian"]  # ...and they do not import it back
    assert cycles(graph) == []
