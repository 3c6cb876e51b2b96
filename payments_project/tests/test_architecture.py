"""The layout the README describes, checked: imports between the domain apps run one way, no
production module imports the dev stand-in, no two modules import each other (even lazily), each
package says what it owns, and settings are read in one place and listed in .env.example."""

from __future__ import annotations

import ast
import re
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


def _package_folders() -> list[Path]:
    skipped = {"tests", "migrations", "management", "templatetags"}
    return sorted(
        path.parent
        for package in PACKAGES
        for path in (ROOT / package).rglob("__init__.py")
        if not skipped.intersection(path.relative_to(ROOT).parts)
    )


def test_every_app_and_sub_package_opens_with_a_docstring() -> None:
    silent = [
        str(folder.relative_to(ROOT))
        for folder in _package_folders()
        if not (ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or "").strip()
    ]
    assert silent == []


READERS = {"env_str", "env_bool", "env_int", "env_list", "env_map"}
# Read by scripts/dev_migrate.py as the XDG base directory standard defines it, not one of ours.
NOT_OURS = {"XDG_CACHE_HOME"}


def _variables_read() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [*_modules().values(), *(ROOT / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in READERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.setdefault(node.args[0].value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_variable_read_with_the_env_readers_is_listed_in_env_example() -> None:
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    missing = {name: where for name, where in _variables_read().items() if name not in listed | NOT_OURS}
    assert missing == {}


# Where the process environment may be read directly, and why.
ENVIRON_READERS = {
    "payments_project/env.py": "the typed readers themselves",
    "payments_project/testing_env.py": "the test defaults, set before Django reads its settings",
    "payments_project/metrics_multiprocess.py": "prometheus_client's own variable, for the workers",
    "payments_project/wsgi_environ.py": "keeps the process environment out of each request",
}


def test_settings_are_read_in_settings_only() -> None:
    # given every production module but those allowed to read the environment themselves
    offenders = []
    for path in _modules().values():
        where, source = str(path.relative_to(ROOT)), path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            # then none reads a variable past settings.py (the entry points only name the settings)
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"environ", "getenv"}
                and where not in ENVIRON_READERS
                and 'setdefault("DJANGO_SETTINGS_MODULE"' not in lines[node.lineno - 1]
            ):
                offenders.append(f"{where}:{node.lineno}")
            # and none gives a setting a default of its own: settings.py defines each one
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) == 3
                and ast.unparse(node.args[0]) == "settings"
            ):
                offenders.append(f"{where}:{node.lineno}")
    assert offenders == []
