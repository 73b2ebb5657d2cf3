"""The house rules of DESIGN.md, checked on the source: rooms import downwards only, only
`fabric` runs network tools, only `controllers/openflow` imports os_ken, the rooms that
must run without root import nothing that needs it, and no file grows past 40 KB."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("topologies", "controllers", "fabric", "experiments")
#: room -> rooms (or modules) it may import.
ALLOWED = {
    "topologies": set(),
    "controllers": {"topologies", "fabric.nic.wire"},
    "fabric": {"topologies"},
    "experiments": {"topologies", "controllers", "fabric"},
}
#: Packages that must import (transitively, within the project) no root-needing module.
PURE = ("topologies", "controllers.core", "controllers.algorithms", "experiments.workload",
        "experiments.analysis", "experiments.ab", "fabric.measure.fidelity")
ROOT_NEEDING = ("mininet", "os_ken", "subprocess", "pyroute2")


def modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path] | None = None) -> set[str]:
    """Dotted names imported anywhere in a file (module level or inside functions);
    ``from pkg import sub`` counts as importing ``pkg.sub`` only (when it is a module)."""
    known = known if known is not None else modules()
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = {f"{node.module}.{alias.name}" for alias in node.names}
            if subs <= set(known):
                names.update(subs)
            else:
                names.add(node.module)
    return names


def project_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules a file imports."""
    return {name for name in imports(path, known) if name in known}


def room_of(module: str) -> str:
    return module.split(".", 1)[0]


def test_rooms_import_downwards_only():
    known = modules()
    wrong = []
    for module, path in known.items():
        room = room_of(module)
        for target in project_imports(path, known):
            if room_of(target) == room:
                continue
            if not any(target == a or target.startswith(a + ".") or room_of(target) == a
                       for a in ALLOWED[room]):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles_between_modules():
    known = modules()
    graph = {m: {t for t in project_imports(p, known) if t != m} for m, p in known.items()}
    # A package's __init__ importing its own submodules is not a cycle worth flagging.
    graph = {m: {t for t in targets if not m.startswith(t + ".") and not t.startswith(m + ".")}
             for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_fabric_runs_network_tools_and_only_openflow_imports_os_ken():
    wrong = []
    known = modules()
    for module, path in known.items():
        names = imports(path, known)
        if module.startswith(("topologies", "controllers", "experiments")) and \
                any(n == "subprocess" or n.startswith(("mininet", "pyroute2")) for n in names):
            wrong.append(f"{module} runs or imports network tooling")
        if not module.startswith("controllers.openflow") and \
                any(n == "os_ken" or n.startswith("os_ken.") for n in names):
            wrong.append(f"{module} imports os_ken")
    assert wrong == []


@pytest.mark.parametrize("package", PURE)
def test_pure_rooms_need_no_root(package):
    known = modules()
    seen, todo, offenders = set(), [m for m in known if m == package or
                                    m.startswith(package + ".")], []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        names = imports(known[module], known)
        offenders += [f"{module} imports {n}" for n in names
                      if n.split(".")[0] in ROOT_NEEDING]
        todo += [t for t in project_imports(known[module], known) if t not in seen]
    assert offenders == []


def test_no_file_over_40_kb():
    big = [f"{p.relative_to(ROOT)}: {p.stat().st_size} B" for p in modules().values()
           if p.stat().st_size > 40_000]
    assert big == []
