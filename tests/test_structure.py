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
