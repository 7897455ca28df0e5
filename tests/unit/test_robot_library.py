"""The base of the keyword libraries: components, the library timeout, the one place errors are mapped."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.library import IoTixLibrary
from iotix.errors import ConfigurationError, NotFoundError


class Probe(LibraryComponent):
    @keyword
    def missing_fleet(self) -> None:
        raise NotFoundError("No fleet named 'x' (fleets: none).")

    @keyword
    def failing_check(self) -> None:
        raise AssertionError("expected 1, got 2")

    @keyword("Effective Timeout")
    def effective_timeout(self, timeout: timedelta | None = None) -> float:
        return self.timeout_or_default(timeout)


class ProbeLibrary(IoTixLibrary):
    """A library of one component."""

    def __init__(self, timeout: timedelta = timedelta(seconds=30)) -> None:
        super().__init__([Probe(self)], timeout=timeout)


def test_a_component_works_with_a_fake_context() -> None:
    probe = Probe(SimpleNamespace(context=None, timeout=7.5))
    assert probe.timeout_or_default(None) == 7.5
    assert probe.timeout_or_default(timedelta(seconds=2)) == 2.0


def test_keywords_of_the_components_are_the_library_s_and_building_it_starts_nothing() -> None:
    threads = threading.active_count()
    lib = ProbeLibrary()
    assert lib.get_keyword_names() == ["Effective Timeout", "failing_check", "missing_fleet"]
    assert lib.ROBOT_LIBRARY_SCOPE == "GLOBAL"
    assert lib.ROBOT_LIBRARY_LISTENER  # the suite cleanup listener
    assert threading.active_count() == threads


def test_a_timeout_left_at_its_default_is_the_library_s() -> None:
    lib = ProbeLibrary(timeout=timedelta(minutes=1))
    assert lib.run_keyword("Effective Timeout", []) == 60.0
    assert lib.run_keyword("Effective Timeout", [timedelta(seconds=3)]) == 3.0
    with pytest.raises(ConfigurationError, match="timeout must be above 0 s"):
        ProbeLibrary(timeout=timedelta(0))


def test_run_keyword_turns_core_errors_into_keyword_failures_and_leaves_assertions_alone() -> None:
    lib = ProbeLibrary()
    with pytest.raises(KeywordError, match=r"^No fleet named 'x' \(fleets: none\)\.$") as caught:
        lib.run_keyword("missing_fleet", [])
    assert caught.value.ROBOT_SUPPRESS_NAME is True
    assert caught.value.__cause__ is None
    with pytest.raises(AssertionError, match="expected 1, got 2"):
        lib.run_keyword("failing_check", [])
