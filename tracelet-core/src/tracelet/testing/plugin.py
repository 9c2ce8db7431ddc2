"""The pytest-plugin route: one parametrized fixture that runs every check.

In a test module (or the root ``conftest.py``)::

    pytest_plugins = ["tracelet.testing.plugin"]

    @pytest.fixture
    def backend_under_test(tmp_path):
        return BackendUnderTest("mine", {"url": ...}, MyReadBack(...))

    def test_conformance(conformance_check):
        conformance_check()

``test_conformance`` then runs once per check, as ``test_conformance[<check name>]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tracelet.testing.checks import CHECKS
from tracelet.testing.harness import Harness, open_kit


@pytest.fixture
def conformance_kit(backend_under_test: object, tmp_path: Path) -> Iterator[Harness]:
    """The harness of one test: runs journaled under ``tmp_path``."""
    with open_kit(backend_under_test, tmp_path) as kit:
        yield kit


@pytest.fixture(params=list(CHECKS))
def conformance_check(
    request: pytest.FixtureRequest, conformance_kit: Harness
) -> Callable[[], None]:
    """One conformance check, ready to call (the fixture runs once per check)."""
    return partial(CHECKS[request.param], conformance_kit)
