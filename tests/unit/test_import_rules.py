"""The import direction of ARCHITECTURE.md, checked on the source with ``ast`` (nothing is imported).

Every ``import x`` and ``from x import y`` under ``libraries/iotix`` counts, including imports inside
functions; relative imports are resolved. The rules:

1. The core (every module but the four facades and ``iotix._robot``) never imports ``robot``, ``iotix._robot``
   or a facade.
2. ``iotix.transport`` never imports ``iotix.fleet``, not even under ``if TYPE_CHECKING:``.
3. ``iotix.model``, ``iotix.generate``, ``iotix.behavior`` and ``iotix.encode`` never import ``iotix.runtime``,
   ``iotix.fleet``, ``iotix.transport`` or ``iotix.services``.
4. The core has no import cycle. The graph leaves out imports under ``if TYPE_CHECKING:``; importing a
   package is importing its ``__init__``, and so is importing a module of a package the importer is not in
   (``iotix.transport.coap`` importing ``iotix.fleet.outcomes`` runs ``iotix/fleet/__init__.py`` too, while
   ``iotix.fleet.device`` importing it does not run it again).
5. ``iotix.fault`` (the network-fault layer, below the transports) never imports ``iotix.runtime``,
   ``iotix.fleet``, ``iotix.transport`` or ``iotix.services``.

``check_import_rules(root)`` returns the violations of a package folder; the tests below run it on small
synthetic packages with one deliberate violation per rule, then on the real tree.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "libraries" / "iotix"

PACKAGE = "iotix"
FACADES = tuple(f"{PACKAGE}.{name}" for name in ("DeviceFleet", "ProtocolClient", "Chaos", "Metrics"))
ROBOT_GLUE = f"{PACKAGE}._robot"
#: Rule 1: what the core never imports.
ROBOT_SIDE = ("robot", ROBOT_GLUE, *FACADES)
#: Rule 3: the leaves of the import direction and what they never import.
LEAVES = tuple(f"{PACKAGE}.{name}" for name in ("model", "generate", "behavior", "encode"))
ABOVE_LEAVES = tuple(f"{PACKAGE}.{name}" for name in ("runtime", "fleet", "transport", "services"))

RULES = {
    1: "the core never imports robot, iotix._robot or a keyword library",
    2: "iotix.transport never imports iotix.fleet",
    3: "model, generate, behavior and encode never import runtime, fleet, transport or services",
    4: "no import cycle in the core",
    5: "iotix.fault never imports runtime, fleet, transport or services",
}


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or one of its submodules."""
    return module == prefix or module.startswith(prefix + ".")


def is_core(module: str) -> bool:
    return not any(within(module, other) for other in ROBOT_SIDE)


@dataclass(frozen=True)
class Import:
    """One imported module, as ``importer`` (in ``path`` at ``line``) gets it."""

    importer: str
    target: str
    path: Path
    line: int
    type_checking: bool
    via: str = ""  # the module the statement names, when ``target`` is the package it runs implicitly

    def describe(self) -> str:
        via = f" (via {self.via})" if self.via else ""
        return f"{display(self.path)}:{self.line}: {self.importer} imports {self.target}{via}"


@dataclass(frozen=True)
class Violation:
    rule: int
    path: Path
    line: int
    importer: str
    imported: str
    message: str

    def __str__(self) -> str:
        return f"{display(self.path)}:{self.line}: rule {self.rule} ({RULES[self.rule]}): {self.message}"


def display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------
# Collecting imports
# --------------------------------------------------------------------------------------------------


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file for every ``.py`` below ``root`` (a package ``foo`` is its ``foo/__init__.py``)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((root.name, *parts))] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_statements(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement anywhere in ``tree``, and whether it sits under ``if TYPE_CHECKING:``."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, type_checking = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_checking
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend((child, True) for child in node.body)
            stack.extend((child, type_checking) for child in node.orelse)
        else:
            stack.extend((child, type_checking) for child in ast.iter_child_nodes(node))


def resolve_from(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement names."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if node.level - 1 >= len(package):
        raise ValueError(f"relative import beyond the top-level package in {importer}, line {node.lineno}")
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """What ``importer`` imports, one ``Import`` per module (a ``from`` import of a submodule is that submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node, type_checking in import_statements(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = resolve_from(importer, is_package, node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in dict.fromkeys(targets):
            yield Import(importer, target, path, node.lineno, type_checking)


def runtime_edges(imp: Import, modules: dict[str, Path]) -> Iterator[Import]:
    """The modules an import runs: the target, and the packages above it that do not contain the importer."""
    parts = imp.target.split(".")
    for depth in range(1, len(parts)):
        package = ".".join(parts[:depth])
        if package in modules and not within(imp.importer, package):
            yield Import(imp.importer, package, imp.path, imp.line, imp.type_checking, via=imp.target)
    if imp.target in modules:
        yield imp


# --------------------------------------------------------------------------------------------------
# Cycles
# --------------------------------------------------------------------------------------------------


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def cycle_violations(imports: list[Import], modules: dict[str, Path]) -> list[Violation]:
    core = {module for module in modules if is_core(module)}
    graph: dict[str, set[str]] = {module: set() for module in core}
    edges: list[Import] = []
    for imp in imports:
        if imp.type_checking or imp.importer not in core:
            continue
        for edge in runtime_edges(imp, modules):
            if edge.target in core and edge.target != edge.importer:
                graph[edge.importer].add(edge.target)
                edges.append(edge)
    violations = []
    for component in strongly_connected(graph):
        members = set(component)
        inside = sorted(
            (edge for edge in edges if edge.importer in members and edge.target in members),
            key=lambda edge: (edge.importer, edge.line, edge.target),
        )
        listing = "".join(f"\n    {edge.describe()}" for edge in inside)
        first = inside[0]
        message = f"import cycle between {', '.join(component)}:{listing}"
        violations.append(Violation(4, first.path, first.line, first.importer, first.target, message))
    return violations


# --------------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------------


def check_import_rules(root: Path) -> list[Violation]:
    """Every violation of the four rules in the package folder ``root`` (named ``iotix``)."""
    modules = module_files(root)
    imports = [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]
    violations: list[Violation] = []

    def forbid(rule: int, imp: Import, forbidden: tuple[str, ...]) -> None:
        hit = next((prefix for prefix in forbidden if within(imp.target, prefix)), None)
        if hit is not None:
            guarded = " under 'if TYPE_CHECKING:'" if imp.type_checking else ""
            message = f"{imp.importer} imports {imp.target}{guarded}"
            violations.append(Violation(rule, imp.path, imp.line, imp.importer, imp.target, message))

    for imp in imports:
        if is_core(imp.importer):
            forbid(1, imp, ROBOT_SIDE)
        if within(imp.importer, f"{PACKAGE}.transport"):
            forbid(2, imp, (f"{PACKAGE}.fleet",))
        if any(within(imp.importer, leaf) for leaf in LEAVES):
            forbid(3, imp, ABOVE_LEAVES)
        if within(imp.importer, f"{PACKAGE}.fault"):
            forbid(5, imp, ABOVE_LEAVES)
    violations.extend(cycle_violations(imports, modules))
    return sorted(violations, key=lambda v: (v.rule, str(v.path), v.line, v.imported))


# --------------------------------------------------------------------------------------------------
# The checker on synthetic packages: each rule catches a new violation, and only that
# --------------------------------------------------------------------------------------------------

TYPE_CHECKING_BLOCK = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"

# A small tree that follows every rule, in the shapes the real tree uses.
CLEAN = {
    "__init__.py": '"""Top."""\n',
    "DeviceFleet.py": "from robot.api import logger\nfrom iotix._robot import context\nfrom iotix.fleet import Fleet\n",
    "_robot/__init__.py": "",
    "_robot/context.py": "import robot.running\nfrom iotix import runtime\nfrom iotix.DeviceFleet import logger\n",
    "runtime.py": "import asyncio\n",
    "encode.py": "import json\nfrom iotix.model import DeviceModel\n",
    "model/__init__.py": "from iotix.model.loader import load\nfrom iotix.model.types import DeviceModel\n",
    "model/loader.py": "from iotix.model.types import DeviceModel\n\ndef load():\n    from . import types\n",
    "model/types.py": TYPE_CHECKING_BLOCK + "    from iotix.model.loader import load\nclass DeviceModel: ...\n",
    "generate/__init__.py": "",
    "generate/numeric.py": "from ..model.types import DeviceModel\n",
    "behavior/__init__.py": "from .conditions import compile_condition\n",
    "behavior/conditions.py": "from iotix.behavior._shared import shorten\n",
    "behavior/_shared.py": "",
    "transport/__init__.py": "from iotix.transport.base import Transport\n",
    "transport/base.py": (
        "from iotix import encode\nfrom iotix.behavior import compile_condition\nclass Transport: pass\n"
    ),
    "transport/mqtt.py": "from .base import Transport\nfrom . import base\n",
    "fleet/__init__.py": "from iotix.fleet.fleet import Fleet\n",
    "fleet/fleet.py": (
        "import iotix.transport.mqtt\nfrom iotix.transport import base\n\nclass Fleet:\n"
        "    def start(self):\n        from iotix.fleet import outcomes\n"
    ),
    "fleet/outcomes.py": TYPE_CHECKING_BLOCK + "    from iotix.fleet.fleet import Fleet\n",
    "services/__init__.py": "",
    "services/process.py": "from iotix.runtime import asyncio\n",
}


def write_package(base: Path, files: dict[str, str | None]) -> Path:
    """``files`` (relative path -> source, ``None`` to leave one out) as a package ``iotix`` below ``base``."""
    root = base / PACKAGE
    for relative, source in files.items():
        if source is None:
            continue
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root


def test_clean_synthetic_package_has_no_violation(tmp_path: Path) -> None:
    assert check_import_rules(write_package(tmp_path, CLEAN)) == []


def found(root: Path, violations: list[Violation]) -> set[tuple[int, str, int, str]]:
    """(rule, file relative to ``root``, line, imported module) of each violation."""
    return {(v.rule, v.path.relative_to(root).as_posix(), v.line, v.imported) for v in violations}


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        # a lazy import inside a function counts
        (
            "observe/report.py",
            "def flush():\n    from robot.api import log\n",
            (1, "observe/report.py", 2, "robot.api"),
        ),
        ("observe/report.py", "import robot\n", (1, "observe/report.py", 1, "robot")),
        ("cli.py", "from iotix._robot.context import x\n", (1, "cli.py", 1, "iotix._robot.context")),
        ("cli.py", "from . import DeviceFleet\n", (1, "cli.py", 1, "iotix.DeviceFleet")),
        ("fleet/device.py", "import iotix.Metrics\n", (1, "fleet/device.py", 1, "iotix.Metrics")),
    ],
)
def test_rule_1_core_never_imports_robot(
    tmp_path: Path, relative: str, source: str, expected: tuple[int, str, int, str]
) -> None:
    root = write_package(tmp_path, {**CLEAN, relative: source})
    assert found(root, check_import_rules(root)) == {expected}


@pytest.mark.parametrize(
    ("source", "line", "imported"),
    [
        (TYPE_CHECKING_BLOCK + "    from ..fleet.outcomes import X\n", 3, "iotix.fleet.outcomes"),
        ("import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    import iotix.fleet\n", 5, "iotix.fleet"),
        ("def send():\n    from iotix import fleet\n", 2, "iotix.fleet"),
    ],
)
def test_rule_2_transport_never_imports_fleet(tmp_path: Path, source: str, line: int, imported: str) -> None:
    root = write_package(tmp_path, {**CLEAN, "transport/coap.py": source})
    assert found(root, check_import_rules(root)) == {(2, "transport/coap.py", line, imported)}


@pytest.mark.parametrize(
    ("relative", "source", "imported"),
    [
        ("generate/replay.py", "from iotix.runtime import Runtime\n", "iotix.runtime"),
        ("model/checks.py", "from ..services import process\n", "iotix.services.process"),
        ("behavior/templates.py", "from iotix.transport.base import Transport\n", "iotix.transport.base"),
        ("encode.py", TYPE_CHECKING_BLOCK + "    import iotix.fleet.fleet\n", "iotix.fleet.fleet"),
    ],
)
def test_rule_3_leaves_never_import_upwards(tmp_path: Path, relative: str, source: str, imported: str) -> None:
    root = write_package(tmp_path, {**CLEAN, relative: source})
    line = source.count("\n")
    assert found(root, check_import_rules(root)) == {(3, relative, line, imported)}


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("from iotix.transport.base import TransportError\n", "iotix.transport.base"),
        (TYPE_CHECKING_BLOCK + "    from iotix.fleet.fleet import Fleet\n", "iotix.fleet.fleet"),
        ("def run():\n    from iotix import runtime\n", "iotix.runtime"),
    ],
)
def test_rule_5_the_fault_layer_sits_below_the_transports(tmp_path: Path, source: str, imported: str) -> None:
    files = {**CLEAN, "fault/__init__.py": "", "fault/pipe.py": source}
    root = write_package(tmp_path, files)
    assert found(root, check_import_rules(root)) == {(5, "fault/pipe.py", source.count("\n"), imported)}


def test_rule_4_finds_a_cycle_and_names_every_import_in_it(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "observe/__init__.py": "",
        "observe/tracker.py": "from iotix.observe.histogram import Histogram\n",
        # lazy, but still a cycle in the module graph
        "observe/histogram.py": "class Histogram:\n    def merge(self):\n        from . import tracker\n",
    }
    root = write_package(tmp_path, files)
    violations = check_import_rules(root)
    assert found(root, violations) == {(4, "observe/histogram.py", 3, "iotix.observe.tracker")}
    message = str(violations[0])
    assert "iotix.observe.histogram, iotix.observe.tracker" in message
    assert "histogram.py:3: iotix.observe.histogram imports iotix.observe.tracker" in message
    assert "tracker.py:1: iotix.observe.tracker imports iotix.observe.histogram" in message


def test_rule_4_importing_a_submodule_runs_the_package_init(tmp_path: Path) -> None:
    # fleet/__init__ -> fleet.fleet -> transport.mqtt; transport.mqtt -> fleet.outcomes runs fleet/__init__.
    files = {**CLEAN, "transport/mqtt.py": "from iotix.fleet.outcomes import Outcomes\n"}
    violations = [v for v in check_import_rules(write_package(tmp_path, files)) if v.rule == 4]
    assert len(violations) == 1
    message = str(violations[0])
    assert "iotix.fleet, iotix.fleet.fleet, iotix.transport.mqtt" in message
    assert "iotix.transport.mqtt imports iotix.fleet (via iotix.fleet.outcomes)" in message


def test_rule_4_leaves_out_type_checking_imports_and_the_robot_side(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        # a cycle only through TYPE_CHECKING: fine
        "transport/base.py": TYPE_CHECKING_BLOCK
        + "    from iotix.transport.mqtt import Client\nclass Transport: ...\n",
        # DeviceFleet <-> _robot.context is outside the core
        "_robot/context.py": "from iotix.DeviceFleet import logger\n",
    }
    assert check_import_rules(write_package(tmp_path, files)) == []


def test_every_rule_at_once(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "observe/__init__.py": "from robot.api import logger\n",
        "transport/coap.py": "from iotix.fleet.fleet import Fleet\n",
        "generate/numeric.py": "import iotix.transport\n",
        "observe/tracker.py": "import iotix.observe.histogram\n",
        "observe/histogram.py": "from iotix.observe import tracker\n",
    }
    violations = check_import_rules(write_package(tmp_path, files))
    assert {v.rule for v in violations} == {1, 2, 3, 4}
    for violation in violations:
        assert f"{PACKAGE}/" in str(violation)
        assert f":{violation.line}: rule {violation.rule}" in str(violation)
        assert violation.imported in str(violation)


# --------------------------------------------------------------------------------------------------
# The real tree
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(RULES), ids=[f"rule{rule}" for rule in sorted(RULES)])
def test_the_library_follows_the_import_rules(rule: int) -> None:
    violations = [v for v in check_import_rules(LIBRARY) if v.rule == rule]
    assert not violations, f"{len(violations)} violation(s):\n" + "\n".join(map(str, violations))
