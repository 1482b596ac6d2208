"""src/adabatch imports without cycles: each module's imports (any of them, those only for type
checking and those inside functions too) form a directed graph over the package's modules, read with
ast, with no cycle in it. A cycle is a design smell whether or not Python happens to tolerate it today."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "adabatch"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub where there is one, else names of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as the list of its modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return [*path[path.index(successor):], successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_reads_relative_type_checking_and_submodule_imports(tmp_path):
    package = tmp_path / "adabatch"
    (package / "run").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "step.py").write_text("")
    (package / "run" / "__init__.py").write_text("")
    (package / "run" / "loop.py").write_text("from ..step import x\nfrom . import checkpoint\n")
    (package / "run" / "checkpoint.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .loop import State\n")
    graph = {name: imported(name, path, set(modules(package))) for name, path in modules(package).items()}
    assert graph["adabatch.run.loop"] == {"adabatch.step", "adabatch.run.checkpoint"}
    assert find_cycle(graph) == ["adabatch.run.checkpoint", "adabatch.run.loop", "adabatch.run.checkpoint"]


def test_src_adabatch_has_no_import_cycle():
    graph = import_graph()
    assert "adabatch.run.loop" in graph and graph["adabatch.run.loop"]  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
