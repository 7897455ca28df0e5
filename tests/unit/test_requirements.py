"""The declared Robot Framework version is one the libraries import on (read from the source, nothing installed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "libraries" / "iotix"

#: Robot Framework APIs the libraries may import -> the first release that has them.
NEW_IN = {("robot.api.types", "Secret"): "7.4"}


def robot_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(dep) for dep in project["dependencies"] if Requirement(dep).name == "robotframework"]
    assert len(found) == 1, f"pyproject.toml should list robotframework once, found {found}"
    return found[0]


def imported_robot_apis() -> set[tuple[str, str]]:
    """``(module, name)`` of every ``from robot... import name`` under libraries/iotix."""
    found = set()
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robot"):
                found.update((node.module or "", alias.name) for alias in node.names)
    return found


def test_robot_framework_requirement_excludes_releases_without_the_apis_the_libraries_import() -> None:
    requirement = robot_requirement()
    used = imported_robot_apis() & NEW_IN.keys()
    assert ("robot.api.types", "Secret") in used  # the check below is not vacuous
    for module, name in sorted(used):
        first = NEW_IN[(module, name)]
        major, minor = map(int, first.split("."))
        previous = f"{major}.{minor - 1}.99"
        assert requirement.specifier.contains(first), f"{requirement} excludes {first}, which has {module}.{name}"
        assert not requirement.specifier.contains(previous), (
            f"{requirement} admits Robot Framework {previous}, which has no {module}.{name} "
            f"(new in {first}): the libraries would fail to import"
        )
