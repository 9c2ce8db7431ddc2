"""The backend conformance kit: checks that a Tracelet backend delivers every record intact.

Only test suites import it (it needs pytest); ``import tracelet`` never does. A backend
author describes the backend with :class:`BackendUnderTest` (its name, options, a
:class:`ReadBack` adapter, and what its tool does to the data) and runs the checks either
by subclassing :class:`BackendConformance`::

    from tracelet.testing import BackendConformance, BackendUnderTest, LocalReadBack

    class TestLocalStore(BackendConformance):
        @pytest.fixture
        def backend_under_test(self, tmp_path):
            target = tmp_path / "delivered"
            return BackendUnderTest("local", {"path": str(target)}, LocalReadBack(target))

or through the pytest plugin :mod:`tracelet.testing.plugin`. See ``docs/conformance.md``.
"""

from tracelet.testing.checks import CHECKS
from tracelet.testing.contract import BackendUnderTest, ReadBack
from tracelet.testing.harness import Harness, open_kit
from tracelet.testing.local import LocalReadBack
from tracelet.testing.suite import BackendConformance

__all__ = [
    "CHECKS",
    "BackendConformance",
    "BackendUnderTest",
    "Harness",
    "LocalReadBack",
    "ReadBack",
    "open_kit",
]
