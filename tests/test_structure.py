"""The package's shape: no import circle among harness's modules, and docs/ARCHITECTURE.md names
only files and folders that exist (and every top-level module)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness"


def _modules() -> Dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _module_level_imports(path: Path, modules: Dict[str, Path]) -> Set[str]:
    """harness modules ``path`` imports when it is imported (function-level imports excluded)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("harness"):
                found.add(name)
    return found


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circle_among_harness_modules():
    modules = _modules()
    graph = {name: _module_level_imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_architecture_names_only_what_exists_and_every_top_level_module():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", text))
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    folders = {str(p.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("*") if p.is_dir()}
    basenames = {Path(f).name for f in files} | {Path(f[:-1]).name + "/" for f in folders}
    missing = {n for n in named if n not in files | folders | basenames}
    assert not missing, f"ARCHITECTURE.md names what is not in harness/: {sorted(missing)}"
    top_level = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    unnamed = {m for m in top_level if m not in named and f"`{m}`" not in text}
    assert not unnamed, f"ARCHITECTURE.md does not name: {sorted(unnamed)}"


def _function_names(path: Path) -> Set[str]:
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def test_one_first_line_helper():
    """An exception's first line is taken by ``errors.first_line`` alone (there were six)."""
    defining = sorted(
        str(path.relative_to(ROOT))
        for path in _modules().values()
        if any(name.strip("_") == "first_line" for name in _function_names(path))
    )
    assert defining == ["harness/errors.py"]


def _filters_graph_inputs(node: ast.AST) -> bool:
    """A comprehension over ``<x>.graph.input`` that leaves names out (``if v.name not in ...``)."""
    if not isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return False
    return any(
        isinstance(gen.iter, ast.Attribute)
        and gen.iter.attr == "input"
        and isinstance(gen.iter.value, ast.Attribute)
        and gen.iter.value.attr == "graph"
        and any(
            isinstance(c, ast.Compare) and any(isinstance(op, ast.NotIn) for op in c.ops)
            for cond in gen.ifs
            for c in ast.walk(cond)
        )
        for gen in node.generators
    )


def test_graph_inputs_minus_initializers_in_one_place():
    """``onnx_io.graph_inputs`` is the one "graph inputs minus initializers" (there were 17)."""
    found = sorted(
        str(path.relative_to(ROOT))
        for path in list(_modules().values()) + list((ROOT / "tests").glob("*.py"))
        if any(_filters_graph_inputs(node) for node in ast.walk(ast.parse(path.read_text())))
    )
    assert found == ["harness/onnx_io.py"]
    example = "[v for v in model.graph.input if v.name not in initializers]"
    assert _filters_graph_inputs(ast.parse(example).body[0].value)


def test_markdown_tables_only_through_markdown_table():
    """A table's rule row (``|---|``) is written by ``report.formats.markdown_table`` alone, which
    escapes ``|`` inside cells."""
    found = sorted(
        str(path.relative_to(ROOT))
        for path in _modules().values()
        if any(
            isinstance(node, ast.Constant) and isinstance(node.value, str) and "---|" in node.value
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert found == ["harness/report/formats.py"]


def test_runners_are_made_and_timed_in_measure_only():
    """One measurement path: only harness/measure.py makes runners, opens them and runs the
    protocol (backends define them, timing defines the protocol)."""
    made = re.compile(
        r"get_runner_class\(|runner_class\(|open_runners\(|measure_interleaved\(|"
        r"\b(?:OnnxRuntime|TensorRT|Torch|Trtexec)Runner\("
    )
    allowed = {PACKAGE / "measure.py", PACKAGE / "timing.py"}
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path not in allowed and PACKAGE / "backends" not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if made.search(line) and not line.lstrip().startswith(("def ", "class ", "#"))
    ]
    assert found == []
    assert made.search((PACKAGE / "measure.py").read_text())
