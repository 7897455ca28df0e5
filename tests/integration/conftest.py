"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import Harness


@pytest.fixture
def h() -> Iterator[Harness]:
    """A private runtime + simulator (see :class:`harness.Harness`), stopped at the end of the test.

    A module that needs a harness of its own kind defines its own ``h``.
    """
    harness = Harness()
    yield harness
    harness.close()
