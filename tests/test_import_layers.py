"""Modules depend downwards (issue 12, "Structure"): the config modules and the client
programs are in no import circle, counting imports inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

from vcdtest import REPO

PACKAGES = ("vcd", "vstatd", "libvserver", "templates", "vshelper")


def import_graph() -> dict[str, set[str]]:
    files = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in files:
                        graph[name].add(full)
                    elif node.module in files:
                        graph[name].add(node.module)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def test_config_modules_and_client_programs_are_in_no_import_circle():
    graph = import_graph()
    watched = ["vcd.config", "vcd.configkeys", "vstatd.config", "vcd.vcdadm",
               *(m for m in graph if m.startswith("vcd.clients"))]
    circles = [m for m in watched if m in reachable(graph, m)]
    assert circles == [], f"modules that import themselves through others: {circles}"


def test_completion_is_handed_the_programs_instead_of_importing_them():
    graph = import_graph()
    programs = {"vcd.clients.vcc", "vcd.clients.vce", "vcd.clients.vgc", "vcd.vcdadm"}
    assert not programs & reachable(graph, "vcd.clients.completion")
    assert programs <= graph.get("vcd.clients.programs", set())
