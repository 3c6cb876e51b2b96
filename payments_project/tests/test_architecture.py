"""The layout the README describes, checked: imports between the domain apps run one way, no
production module imports the dev stand-in, and no two modules import each other (even lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["payments_project", "billing", "subscriptions", "entitlements", "usage", "devtools"]
# A domain app may import only the apps to its left.
DOMAIN_ORDER = ["billing", "subscriptions", "entitlements", "usage"]


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def test_domain_apps_import_only_the_apps_before_them() -> None:
    upward = sorted(
        (source, target)
        for source, targets in _imports().items()
        for target in targets
        if source.split(".")[0] in DOMAIN_ORDER
        and target.split(".")[0] in DOMAIN_ORDER
        and DOMAIN_ORDER.index(target.split(".")[0]) > DOMAIN_ORDER.index(source.split(".")[0])
    )
    assert upward == []


def test_no_production_module_imports_the_dev_tools() -> None:
    offenders = sorted(
        source
        for source, targets in _imports().items()
        if not source.startswith("devtools") and any(t.startswith("devtools") for t in targets)
    )
    assert offenders == []


def test_no_two_modules_import_each_other_directly_or_through_others() -> None:
    graph = _imports()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []
